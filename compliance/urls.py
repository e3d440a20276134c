from django.urls import path

from compliance import views

app_name = "compliance"
urlpatterns = [
    path("", views.audit_history, name="audit"),
    path("export.csv", views.audit_history_export, name="audit_export"),
    path("export", views.audit_export, name="export"),
    path("journal/", views.journal, name="journal"),
    path("imports/", views.imports, name="imports"),
    path("imports/<int:pk>/", views.batch, name="batch"),
]
