from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from abaco import health, views

admin.site.site_header = "Abaco Loans Analytics"
admin.site.site_title = "Abaco admin"
admin.site.index_title = "Loan book and uploads"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("readyz", health.readyz, name="readyz"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("kpis.urls")),
    path("audit/", include("compliance.urls")),
    path("pipelines/", include("integrations.urls")),
    path("admin/", admin.site.urls),
    # REST API v1 (docs/api.md): each app's endpoints live in its own api module.
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "api/v1/",
        include(
            (
                [
                    path("", include("loans.api")),
                    path("", include("kpis.api")),
                    path("", include("integrations.api")),
                    path("", include("api.audit")),
                ],
                "api",
            )
        ),
    ),
]

# Unknown URLs under /api/ answer in problem+json; every other path keeps Django's 404 page.
handler404 = "api.errors.not_found"
