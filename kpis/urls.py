from django.urls import path

from kpis import views

app_name = "kpis"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("risk/", views.risk, name="risk"),
    path("concentration/", views.concentration, name="concentration"),
    path("collections/", views.collections, name="collections"),
    path("loans/", views.loans, name="loans"),
    path("loans/<int:pk>/", views.loan, name="loan"),
    path("insights/", views.insights, name="insights"),
    path("insights/regenerate/", views.insight_regenerate, name="insight_regenerate"),
    path("customers/<int:pk>/", views.customer, name="customer"),
]
