from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from abaco import health, views

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
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("kpis.urls")),
    path("audit/", include("compliance.urls")),
    path("pipelines/", include("integrations.urls")),
    path("files/", include("loans.urls")),
    path("admin/", admin.site.urls),
]
