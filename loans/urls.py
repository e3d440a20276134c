from django.urls import path

from loans import views

app_name = "loans"
urlpatterns = [
    path("batches/<int:pk>/raw/", views.batch_raw_file, name="batch_raw_file"),
]
