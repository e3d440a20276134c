"""The upload flow in the admin: choose kind and source, upload, preview (dry run), confirm;
the task cluster loads it while the page shows live progress, then the summary and rejects."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from abaco.uploads import upload_size_refusal
from loans.models import ColumnMap, Upload
from loans.services import upload_check_queue, upload_queue


class UploadForm(forms.ModelForm):
    source = forms.CharField(
        max_length=64,
        initial="cascade",
        help_text="Who sent the file. A source with a column map (Column maps) is read with it; 'cascade' is the tape's own format.",
        widget=forms.TextInput(attrs={"list": "sources"}),
    )

    class Meta:
        model = Upload
        fields = ["kind", "source", "file", "full_export", "data_through", "quarantine"]

    def clean_file(self):
        file = self.cleaned_data.get("file")
        if why := upload_size_refusal(file):
            raise forms.ValidationError(why)
        return file


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    form = UploadForm
    list_display = [
        "id",
        "created_at",
        "kind",
        "source",
        "status",
        "progress_percent",
        "created_by",
    ]
    list_filter = ["status", "kind"]
    show_full_result_count = False
    change_form_template = "admin/loans/upload/change_form.html"

    def get_queryset(self, request):
        uploads = super().get_queryset(request).select_related("created_by")
        if not request.user.has_perm("loans.change_loan"):  # uploaders see their own
            uploads = uploads.filter(created_by=request.user)
        return uploads

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "kind",
            "source",
            "stored_as",
            "original_name",
            "full_export",
            "data_through",
            "quarantine",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "status",
            "progress_label",
        ]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["kind", "source", "file", "full_export", "data_through", "quarantine"]
        return self.get_readonly_fields(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # an upload is evidence: it is never edited, only loaded

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Stored as")
    def stored_as(self, obj) -> str:
        # The name only: nothing under MEDIA_ROOT is served; the raw files are on the batches.
        return obj.file.name

    @admin.display(description="progress")
    def progress_percent(self, obj) -> str:
        return f"{obj.progress:.0%}"

    def save_model(self, request, obj, form, change):
        obj.created_by = request.user
        if not change and obj.file:
            # Before storage saves (and may rename) it: the kind is read from this name.
            obj.original_name = obj.file.name
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        if obj.kind == Upload.Kind.TAPE:  # checked in the task cluster, never in the request
            upload_check_queue(upload=obj)
        return HttpResponseRedirect(reverse("admin:loans_upload_preview", args=[obj.pk]))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["sources"] = ["cascade", *ColumnMap.objects.values_list("source", flat=True)]
        if obj is not None:
            context["batches"] = obj.batches.order_by("kind")
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        own = [
            path(
                "<int:pk>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="loans_upload_preview",
            ),
            path(
                "<int:pk>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="loans_upload_progress",
            ),
            path(
                "<int:pk>/rejects/",
                self.admin_site.admin_view(self.rejects_view),
                name="loans_upload_rejects",
            ),
        ]
        return own + super().get_urls()

    def _upload_for(self, request, pk: int) -> Upload:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(self.get_queryset(request), pk=pk)

    def preview_view(self, request, pk: int):
        upload = self._upload_for(request, pk)
        if request.method == "POST":
            if not self.has_add_permission(request):
                raise PermissionDenied
            if not upload_queue(upload=upload):
                messages.warning(request, "This upload was already sent to load.")
            else:
                messages.success(
                    request, "Loading in the background; this page follows its progress."
                )
            return HttpResponseRedirect(reverse("admin:loans_upload_change", args=[upload.pk]))
        unchecked = upload.kind == Upload.Kind.TAPE and upload.preview is None
        if unchecked and upload.status == Upload.Status.DRAFT:  # uploaded before checks ran here
            upload_check_queue(upload=upload)
        found = upload.preview or {}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Check {upload} before loading",
            "upload": upload,
            "checking": upload.status == Upload.Status.CHECKING,
            "result": {k: v for k, v in found.items() if k != "fatal"} or None,
            "fatal": found.get("fatal"),
        }
        return TemplateResponse(request, "admin/loans/upload/preview.html", context)

    def progress_view(self, request, pk: int):
        upload = self._upload_for(request, pk)
        return JsonResponse(
            {
                "status": upload.status,
                "status_label": upload.get_status_display(),
                "progress": upload.progress,
                "label": upload.progress_label,
                "done": upload.status in (Upload.Status.LOADED, Upload.Status.FAILED),
            }
        )

    def rejects_view(self, request, pk: int):
        upload = self._upload_for(request, pk)
        if not upload.rejects:
            raise Http404("No rejected rows for this upload.")
        return FileResponse(
            upload.rejects.open("rb"),
            as_attachment=True,
            filename=f"upload-{upload.pk}-rejected-rows.csv",
        )
