from django.urls import path

from compliance import views

app_name = "compliance"
urlpatterns = [
    path("", views.audit_history, name="audit"),
    path("export.csv", views.audit_history_export, name="audit_export"),
]
