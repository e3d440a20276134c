"""Tape diff: what a newer tape changed against the book, with flagged changes for review."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from loans.models import Batch, BatchChange, ColumnMap, Loan
from loans.services import batch_changes_review

LISTED = 500


class ReviewForm(forms.Form):
    changes = forms.ModelMultipleChoiceField(
        queryset=BatchChange.objects.none(), widget=forms.CheckboxSelectMultiple
    )
    decision = forms.ChoiceField(choices=[("accept", "Accept"), ("reject", "Reject")])
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)


def batch_diff_view(model_admin: admin.ModelAdmin, request, pk: int):
    if not request.user.has_perm("loans.view_batchchange"):
        raise PermissionDenied
    # The same rows the batch list shows: uploaders see the batches they brought.
    batch = get_object_or_404(model_admin.get_queryset(request), pk=pk)
    pending = batch.changes.filter(review=BatchChange.Review.PENDING)
    form = ReviewForm(request.POST or None)
    form.fields["changes"].queryset = pending
    if request.method == "POST":
        if not request.user.has_perm("loans.change_batchchange"):
            raise PermissionDenied
        if form.is_valid():
            count = batch_changes_review(
                changes=form.cleaned_data["changes"],
                accept=form.cleaned_data["decision"] == "accept",
                reason=form.cleaned_data["reason"],
                by=request.user,
            )
            messages.success(request, f"{count} change(s) {form.cleaned_data['decision']}ed.")
            return HttpResponseRedirect(reverse("admin:loans_batch_diff", args=[pk]))
    new_loans = (
        Loan.objects.filter(batch=batch, created_at__gte=batch.started_at).only(
            "loan_id", "disburse_date", "disburse_principal"
        )[:LISTED]
        if batch.kind == Batch.Kind.LOANS and batch.started_at
        else []
    )
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Batch._meta,
        "title": f"What {batch} changed",
        "batch": batch,
        "new_loans": new_loans,
        "vanished": batch.changes.filter(change=BatchChange.Change.VANISHED).select_related(
            "reviewed_by"
        )[:LISTED],
        "flagged": batch.changes.filter(change=BatchChange.Change.UPDATED)
        .exclude(review="")
        .select_related("reviewed_by")[:LISTED],
        "other_changes": batch.changes.filter(change=BatchChange.Change.UPDATED, review="")[
            :LISTED
        ],
        "counts": {
            "vanished": batch.changes.filter(change=BatchChange.Change.VANISHED).count(),
            "flagged": batch.changes.exclude(review="").count(),
            "pending": pending.count(),
            "updated": batch.changes.filter(change=BatchChange.Change.UPDATED).count(),
        },
        "form": form,
        "can_review": request.user.has_perm("loans.change_batchchange"),
        "listed": LISTED,
    }
    return TemplateResponse(request, "admin/loans/batch/diff.html", context)


@admin.register(ColumnMap)
class ColumnMapAdmin(admin.ModelAdmin):
    list_display = ["source", "delimiter", "decimal_comma", "day_first", "encoding", "updated_at"]
    search_fields = ["source"]
    fieldsets = [
        (None, {"fields": ["source", "delimiter", "decimal_comma", "day_first", "encoding"]}),
        (
            "Names",
            {
                "fields": ["headers", "file_names"],
                "description": 'headers: {"fecha_desembolso": "disburse_date", "monto_desembolso": "disburse_principal", ...}; '
                'file_names: {"prestamos": "loans", "pagos": "transactions", ...}',
            },
        ),
    ]
