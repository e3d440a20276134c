from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from abaco import health, metrics, views

admin.site.site_header = "Abaco Loans Analytics"
admin.site.site_title = "Abaco admin"
admin.site.index_title = "Loan book and uploads"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("kpis.urls")),
    path("audit/", include("compliance.urls")),
    path("pipelines/", include("integrations.urls")),
    path("admin/", admin.site.urls),
]
