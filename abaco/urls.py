from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from abaco import health, metrics, second_factor, views

handler400 = "api.errors.bad_request"

admin.site.site_header = "Abaco Loans Analytics"
admin.site.site_title = "Abaco admin"
admin.site.index_title = "Loan book and uploads"
# "View site" from the admin: the dashboards, where uploaders and stewards check what a load did
# ("/" would send staff straight back to the admin).
admin.site.site_url = "/dashboard/"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("login/", second_factor.LoginView.as_view(), name="login"),
    path("login/verify/", second_factor.second_factor, name="second_factor"),
    path("login/enrol/", second_factor.second_factor_enrol, name="second_factor_enrol"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("kpis.urls")),
    path("audit/", include("compliance.urls")),
    path("pipelines/", include("integrations.urls")),
    path("files/", include("loans.urls")),
    # The admin signs in through the same page and second factor as the rest of the site.
    path("admin/login/", second_factor.admin_login),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),  # REST API v1, its schema and docs (docs/api.md)
]

# Unknown URLs under /api/ answer in problem+json; every other path keeps Django's 404 page.
handler404 = "api.errors.not_found"
