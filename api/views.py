"""The base views every endpoint of /api/v1/ is built on.

``ApiView`` declares its ``scope`` (what a token needs) and ``permission`` (what the user's role
needs); ``ListApiView`` adds filters parsed by a serializer, cursor pagination and CSV streaming;
``DetailApiView`` reads one object. Each request ends in one call of the access-log hook.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from django.conf import settings
from django.http import StreamingHttpResponse
from rest_framework import exceptions, serializers
from rest_framework.generics import GenericAPIView, ListAPIView, RetrieveAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from api.auth import token_of
from api.errors import PROBLEM, PayloadTooLarge, ProblemRenderer
from compliance.access import access_record
from compliance.exports import csv_response


class CsvRenderer(BaseRenderer):
    """``Accept: text/csv`` on a list: the whole filtered list streamed as CSV. The list views
    stream it themselves (``ListApiView.csv_stream``); this renderer makes the media type
    negotiable and documented."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b""


class Cursor(CursorPagination):
    """Cursor pagination: stable under inserts, no count, no offset. ``page_size`` 1 to 1000."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = "id"

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise exceptions.ValidationError(
                {"page_size": [f"a whole number from 1 to {self.max_page_size}"]}
            )
        return size

    def get_schema_operation_parameters(self, view) -> list[dict]:
        params = super().get_schema_operation_parameters(view)
        for param in params:
            if param["name"] == self.page_size_query_param:
                param["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_page_size,
                    "default": self.page_size,
                }
            elif param["name"] == self.cursor_query_param:
                # An opaque cursor is URL-safe base64: no control characters (the request guard
                # refuses those with a 400 before any view runs).
                param["schema"] = {"type": "string", "pattern": "^[A-Za-z0-9+/=_-]*$"}
        return params


def text(*, max_length: int, **kwargs) -> serializers.RegexField:
    """A free-text filter: printable characters only (no NUL, which PostgreSQL refuses)."""
    return serializers.RegexField(r"^[^\x00-\x1f\x7f]+$", max_length=max_length, **kwargs)


def cursor_by(*fields: str) -> type[Cursor]:
    """A cursor ordered by ``fields`` (the last one unique), for lists not in id order."""
    return type("Cursor", (Cursor,), {"ordering": fields})


class FixedRows(list):
    """A list that lives in code, not in a table (the KPI definitions), served like any other:
    the three queryset calls the cursor and the CSV stream make, done in memory. The cursor
    filters on its first ordering key with the position as a string (DRF writes it so)."""

    def order_by(self, *fields: str) -> FixedRows:
        rows = list(self)
        for name in reversed(fields):  # stable sorts, last key first
            rows.sort(key=lambda row: row[name.lstrip("-")], reverse=name.startswith("-"))
        return FixedRows(rows)

    def filter(self, **lookups: Any) -> FixedRows:
        ((lookup, position),) = lookups.items()
        name, _, how = lookup.rpartition("__")
        after = {"gt": operator.gt, "lt": operator.lt}[how]
        return FixedRows(row for row in self if after(str(row[name]), position))

    def iterator(self, chunk_size: int | None = None) -> Iterator[Any]:
        return iter(self)


def csv_cells(row: Iterable[Any]) -> list[Any]:
    """A row's values as CSV cells: nested values (lists, objects) as JSON, as the audit
    exports write them, rather than Python's spelling."""
    return [
        json.dumps(value, sort_keys=True, default=str)
        if isinstance(value, list | tuple | Mapping)
        else value
        for value in row
    ]


class ApiView(GenericAPIView):
    """Scope and role checked before anything runs; errors as problem+json; size limits."""

    scope: ClassVar[str]
    permission: ClassVar[str]
    renderer_classes: ClassVar[list] = [JSONRenderer]
    access_action = "read"

    def initial(self, request, *args, **kwargs) -> None:
        limit = self.body_limit()
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise PayloadTooLarge(f"The body is {length} bytes; this endpoint takes {limit}.")
        super().initial(request, *args, **kwargs)

    def body_limit(self) -> int:
        """The largest request body this view reads (413 beyond)."""
        return settings.API_MAX_BODY_BYTES

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code >= 400 and isinstance(getattr(response, "data", None), dict):
            response.accepted_renderer = ProblemRenderer()
            response.accepted_media_type = PROBLEM
            response.renderer_context = self.get_renderer_context()
        return response

    def access_record(self, *, obj=None, filters=None, rows: int = 0, status: int = 200) -> None:
        """One access-log entry per request that reads (compliance.access): the action, the
        object, the parsed filters, the rows that went out and the token that asked."""
        access_record(
            request=self.request,
            action=f"api {self.access_action}",
            obj=obj,
            filters={
                k: v if v is None or isinstance(v, int | str) else str(v)
                for k, v in (filters or {}).items()
            },
            rows=rows,
            token_id=getattr(token_of(self.request), "pk", None),
            extra={"status": status},
        )


# What every list takes besides its filters: the page, its size, and DRF's format override.
PAGING_PARAMETERS = ("cursor", "page_size", "format")


class ListApiView(ApiView, ListAPIView):
    """A list: filters from ``filters_class`` (400 on bad values), a cursor page, or the whole
    list as CSV with ``Accept: text/csv``."""

    pagination_class = Cursor
    renderer_classes: ClassVar[list] = [JSONRenderer, CsvRenderer]
    filters_class: ClassVar[type[serializers.Serializer] | None] = None
    access_action = "list"

    def filters(self) -> dict[str, Any]:
        # A parameter the list does not take is refused: a misspelt filter (``min_dpd`` for
        # ``dpd_min``) would otherwise return the unfiltered list as if it were the filtered one.
        known = set(PAGING_PARAMETERS)
        if self.filters_class is not None:
            known |= set(self.filters_class().fields)
        unknown = sorted(set(self.request.query_params) - known)
        if unknown:
            takes = ", ".join(sorted(known))
            raise serializers.ValidationError(
                {
                    name[:40]: [f"not a parameter of this list (it takes {takes})"]
                    for name in unknown
                }
            )
        if self.filters_class is None:
            return {}
        # A plain dict, not the QueryDict: DRF skips blank form values, and "?status=" must be
        # refused (400) like any other invalid value, not read as no filter.
        parsed = self.filters_class(data=self.request.query_params.dict())
        parsed.is_valid(raise_exception=True)
        return dict(parsed.validated_data)

    def rows(self, filters: dict[str, Any]):
        """The filtered queryset (subclasses)."""
        raise NotImplementedError

    def list(self, request, *args, **kwargs):
        filters = self.filters()
        rows = self.rows(filters)
        if request.accepted_renderer.format == "csv":
            self.access_record(filters=filters, rows=-1)  # streamed: the count is not known
            return self.csv_stream(rows)
        page = self.paginate_queryset(rows)
        data = self.get_serializer(page, many=True).data
        self.access_record(filters=filters, rows=len(page))
        return self.get_paginated_response(data)

    def csv_stream(self, rows) -> StreamingHttpResponse:
        serializer = self.get_serializer()
        order = self.pagination_class.ordering
        fields = [order] if isinstance(order, str) else list(order)
        lines = (
            csv_cells(serializer.to_representation(row).values())
            for row in rows.order_by(*fields).iterator(chunk_size=2000)
        )
        name = self.get_view_name().lower().replace(" ", "-")
        return csv_response(filename=f"{name}.csv", header=list(serializer.fields), rows=lines)


class DetailApiView(ApiView, RetrieveAPIView):
    """One object by its URL; 404 when it is not there (or not the caller's to see)."""

    def retrieve(self, request, *args, **kwargs):
        obj = self.get_object()
        self.access_record(obj=obj, rows=1)
        return Response(self.get_serializer(obj).data)
