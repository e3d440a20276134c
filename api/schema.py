"""The OpenAPI schema's conventions: every operation documents its problem+json errors, its
filters as query parameters, and the bearer token scheme with the scope it needs."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework.negotiation import DefaultContentNegotiation

from api.auth import required_of
from api.errors import PROBLEM, ProblemSerializer

ERRORS = {
    "400": "Invalid filters, page size or body: `errors` names each field.",
    "401": "No credentials, or an unknown, expired or revoked token.",
    "403": "The token lacks the scope, or the user's role lacks the permission.",
    "404": "No such object (or a stale cursor).",
    "406": "The Accept header asks for a media type this endpoint does not produce.",
    "409": "The upload was already sent to load.",
    "413": "The body is larger than this endpoint accepts.",
    "415": "The body's media type is not one this endpoint reads.",
    "422": "The file cannot be loaded; `errors` lists its problems.",
    "429": "Too many requests for this token: wait `Retry-After` seconds.",
}


class ProblemAutoSchema(AutoSchema):
    def get_override_parameters(self):
        params = list(super().get_override_parameters())
        filters = getattr(self.view, "filters_class", None)
        if filters is not None and self.method == "GET":
            params.append(filters)
        return params

    def get_description(self) -> str:
        text = super().get_description()
        scope, perm = required_of(self.view, self.method)
        if scope:
            text += f"\n\nNeeds token scope `{scope}` and role permission `{perm}`."
        return text.strip()

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = ["401", "403", "406", "429"]
        has_query = self.method == "GET" and (
            bool(getattr(self.view, "filters_class", None)) or self._is_list_view()
        )
        if has_query or self.method in ("POST", "PUT", "PATCH"):
            codes.append("400")
        if "{" in self.path or self._is_list_view():
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["413", "415"]
        codes += [str(c) for c in getattr(self.view, "extra_error_codes", ())]
        if getattr(self.view, "conditional", False) and self.method == "GET":
            responses.setdefault(
                "304", {"description": "Not modified: the If-None-Match ETag still holds."}
            )
        for code in sorted(set(codes)):
            if code in responses:
                continue
            response = self._get_response_for_code(ProblemSerializer, code, [PROBLEM], direction)
            response["description"] = ERRORS[code]
            responses[code] = response
        return responses


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = "api.auth.BearerAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `manage.py api_token create` or the admin (API tokens).",
        }


class SchemaFormat(DefaultContentNegotiation):
    """/api/schema/?format=json: the schema view alone reads ``format`` from the query (the API
    negotiates by Accept only, so ``format`` is no parameter of its operations)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return super().select_renderer(
            request, renderers, format_suffix or request.query_params.get("format")
        )
