from django.urls import path

from integrations import views

app_name = "integrations"
urlpatterns = [
    path("", views.status, name="status"),
    path("recompute/", views.recompute, name="recompute"),
    path("<slug:name>/run/", views.rerun, name="rerun"),
]
