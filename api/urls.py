"""/api/: the OpenAPI schema, its docs (Swagger UI from drf-spectacular-sidecar, no CDN) and
v1, whose endpoints live in each app's ``api`` module (named by string: the apps sit above
this package in the layering)."""

from __future__ import annotations

from csp.decorators import csp_update
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from api.schema import SchemaFormat

v1 = [
    path("", include("loans.api")),
    path("", include("kpis.api")),
    path("", include("integrations.api")),
    path("", include("api.audit")),
]

urlpatterns = [
    path(
        "schema/",
        SpectacularAPIView.as_view(content_negotiation_class=SchemaFormat),
        name="api-schema",
    ),
    # Swagger UI writes some of its styles inline: allowed on this page alone (scripts stay
    # 'self' only; the docs page shows no book data).
    path(
        "docs/",
        csp_update({"style-src": ["'unsafe-inline'"]})(
            SpectacularSwaggerSplitView.as_view(url_name="api-schema")
        ),
        name="api-docs",
    ),
    path("v1/", include((v1, "api"))),
]
