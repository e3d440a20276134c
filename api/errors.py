"""Errors as ``application/problem+json`` (RFC 9457): type, title, status, detail, instance, and
``errors`` (field -> messages) for invalid input."""

from __future__ import annotations

from http import HTTPStatus

from django.core.exceptions import BadRequest
from django.http import JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.views import exception_handler

from abaco.middleware import CONTROL
from abaco.views import bad_request as site_bad_request

PROBLEM = "application/problem+json"


class ProblemRenderer(JSONRenderer):
    media_type = PROBLEM
    format = "problem"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than this endpoint accepts."
    default_code = "payload_too_large"


class Unprocessable(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The file cannot be loaded."
    default_code = "unprocessable"


def problem(status_code: int, detail: str, *, instance: str = "", **extra) -> dict:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    return body | extra


def problem_handler(exc, context):
    """DRF's handler (status, headers such as Retry-After and WWW-Authenticate), reshaped."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    request = context.get("request")
    instance = request.get_full_path() if request is not None else ""
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        errors = data if isinstance(data, dict) else {"non_field_errors": data}
        body = problem(
            response.status_code,
            "Some fields are invalid; see errors.",
            instance=instance,
            errors=errors,
        )
    else:
        detail = data.get("detail", "") if isinstance(data, dict) else data
        extra = getattr(exc, "problem_extra", {})
        body = problem(response.status_code, str(detail), instance=instance, **extra)
    response.data = body
    return response


def bad_request(request, exception=None):
    """400s raised before a view (control characters, refused by the request guard) answer in
    problem+json under /api/, in the site's layout elsewhere."""
    if request.path.startswith("/api/"):
        if CONTROL.search(request.path):
            # No resource's identifier holds a control character: that URL names nothing.
            return JsonResponse(
                problem(404, "No such resource.", instance=request.path),
                status=404,
                content_type=PROBLEM,
            )
        reason = str(exception) if type(exception) is BadRequest else "Bad request."
        return JsonResponse(
            problem(400, reason, instance=request.path), status=400, content_type=PROBLEM
        )
    return site_bad_request(request, exception)


def not_found(request, exception=None):
    """Unknown URLs under /api/ answer in problem+json like every other API error."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            problem(404, "No such endpoint.", instance=request.get_full_path()),
            status=404,
            content_type=PROBLEM,
        )
    return page_not_found(request, exception)


class ProblemSerializer(serializers.Serializer):
    """The body of every error response (RFC 9457)."""

    type = serializers.CharField(help_text="A URI naming the problem type; about:blank here.")
    title = serializers.CharField(help_text="The HTTP status phrase.")
    status = serializers.IntegerField()
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    instance = serializers.CharField(required=False, help_text="The request's path and query.")
    errors = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="Invalid input: field name -> messages.",
    )
