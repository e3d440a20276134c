"""Tape diff: what a newer tape changed against the book, with flagged changes for review."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from loans.models import Batch, BatchChange, ColumnMap, Loan
from loans.services import batch_changes_review

LISTED = 500  # other updates (current facts) shown; the count above them is exact
PER_PAGE = 100  # rows for review per page; every page is reachable
TAPE_KINDS = ["customers", "loans", "schedules", "transactions"]
CHANGES = {"updated": "Changed the past", "vanished": "Missing from a full export"}
REVIEWS = {"pending": "Waiting", "accepted": "Accepted", "rejected": "Rejected"}


class ReviewForm(forms.Form):
    """A verdict with one reason, on the checked rows or on every waiting row of the filter."""

    changes = forms.ModelMultipleChoiceField(
        queryset=BatchChange.objects.none(), widget=forms.CheckboxSelectMultiple, required=False
    )
    scope = forms.ChoiceField(
        choices=[("checked", "the checked rows"), ("all", "every waiting row of this filter")],
        initial="checked",
        required=False,  # absent: the checked rows
        widget=forms.RadioSelect,
    )
    decision = forms.ChoiceField(choices=[("accept", "Accept"), ("reject", "Reject")])
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)

    def clean(self):
        data = super().clean()
        data["scope"] = data.get("scope") or "checked"
        if data["scope"] == "checked" and not data.get("changes"):
            raise forms.ValidationError("Check at least one row, or choose every waiting row.")
        return data


def _filters(request, *, sources: list[str]) -> dict[str, str]:
    """The review filters from the query string; unknown values are ignored."""
    wanted = {
        "kind": TAPE_KINDS,
        "change": list(CHANGES),
        "review": list(REVIEWS),
        "source": sources,
    }
    return {
        name: request.GET[name]
        for name, allowed in wanted.items()
        if request.GET.get(name) in allowed
    }


def _for_review(changes, filters: dict[str, str]):
    """Flagged changes and vanished rows (every row that needs a steward), narrowed by filters."""
    rows = changes.exclude(review=BatchChange.Review.NONE)
    if "kind" in filters:
        rows = rows.filter(kind=filters["kind"])
    if "change" in filters:
        rows = rows.filter(change=filters["change"])
    if "review" in filters:
        rows = rows.filter(review=filters["review"])
    if "source" in filters:
        rows = rows.filter(batch__source=filters["source"])
    return rows


def batch_diff_view(model_admin: admin.ModelAdmin, request, pk: int | None = None):
    """One batch's changes (``pk``), or every batch's flagged changes the user may see (the
    review page): filtered by kind, change, review and source, counted exactly, paged through
    all of them, and decided on the checked rows or the whole filtered set with one reason."""
    if not request.user.has_perm("loans.view_batchchange"):
        raise PermissionDenied
    # The same rows the batch list shows: uploaders see the batches they brought.
    visible = model_admin.get_queryset(request)
    batch = get_object_or_404(visible, pk=pk) if pk is not None else None
    changes = (
        batch.changes.all() if batch else BatchChange.objects.filter(batch__in=visible.values("pk"))
    )
    sources = sorted(set(visible.values_list("source", flat=True).distinct()))
    filters = _filters(request, sources=sources)
    selected = _for_review(changes, filters).select_related("reviewed_by", "batch")
    pending = selected.filter(review=BatchChange.Review.PENDING)
    here = (
        reverse("admin:loans_batch_diff", args=[pk])
        if batch
        else reverse("admin:loans_batch_review")
    )
    query = urlencode(filters)
    form = ReviewForm(request.POST or None)
    form.fields["changes"].queryset = pending
    if request.method == "POST":
        if not request.user.has_perm("loans.change_batchchange"):
            raise PermissionDenied
        if form.is_valid():
            chosen = (
                pending if form.cleaned_data["scope"] == "all" else form.cleaned_data["changes"]
            )
            count = batch_changes_review(
                changes=chosen,
                accept=form.cleaned_data["decision"] == "accept",
                reason=form.cleaned_data["reason"],
                by=request.user,
            )
            messages.success(request, f"{count} change(s) {form.cleaned_data['decision']}ed.")
            return HttpResponseRedirect(f"{here}?{query}" if query else here)
    page = Paginator(selected.order_by("batch_id", "kind", "key", "pk"), PER_PAGE).get_page(
        request.GET.get("page")
    )
    new_loans = (
        Loan.objects.filter(batch=batch, created_at__gte=batch.started_at).only(
            "loan_id", "disburse_date", "disburse_principal"
        )[:LISTED]
        if batch and batch.kind == Batch.Kind.LOANS and batch.started_at
        else []
    )
    other = changes.filter(change=BatchChange.Change.UPDATED, review=BatchChange.Review.NONE)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Batch._meta,
        "title": f"What {batch} changed" if batch else "Changes waiting for review",
        "batch": batch,
        "new_loans": new_loans,
        "page": page,
        "query": query,
        "filters": filters,
        "filter_choices": [
            ("kind", "Kind", [(k, k) for k in TAPE_KINDS]),
            ("change", "Change", list(CHANGES.items())),
            ("review", "Review", list(REVIEWS.items())),
            *([("source", "Source", [(s, s) for s in sources])] if not batch else []),
        ],
        "other_changes": other[:LISTED] if batch else [],
        "counts": {
            "selected": page.paginator.count,
            "pending_selected": pending.count(),
            "vanished": changes.filter(change=BatchChange.Change.VANISHED).count(),
            "flagged": changes.exclude(review="").count(),
            "pending": changes.filter(review=BatchChange.Review.PENDING).count(),
            "updated": changes.filter(change=BatchChange.Change.UPDATED).count(),
            "other": other.count() if batch else 0,
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
