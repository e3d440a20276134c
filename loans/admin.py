"""Admin for the loan book: read-only where people must not edit, fast at a million rows.

List pages never count the whole table (``show_full_result_count = False`` and an estimated
paginator), related rows are raw ids, and every filter is on an indexed column.
"""

from __future__ import annotations

from auditlog.mixins import LogEntryAdminMixin
from auditlog.models import LogEntry
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from compliance.classification import REDACTED, RESTRICTED_FIELDS, mask, restricted_fields
from loans.models import Batch, Customer, Installment, Loan, Transaction
from loans.selectors import batch_load_effect
from loans.services import demo_remove, snapshots_recompute_queue


class EstimatedCountPaginator(Paginator):
    """Uses PostgreSQL's planner estimate for unfiltered lists instead of COUNT(*) over 1M rows."""

    @cached_property
    def count(self) -> int:
        query = self.object_list.query
        if query.where:
            return super().count
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [self.object_list.model._meta.db_table],
            )
            estimate = cursor.fetchone()[0]
        return estimate if estimate > 10_000 else super().count


class LoanBookAdmin(admin.ModelAdmin):
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50

    def get_search_results(self, request, queryset, search_term):
        """Ids with spaces ("ABF - DSB0007-001") found whole: Django splits a search into words
        and would look for "ABF", "-" and "DSB0007-001" as three exact ids. When the whole term
        is an exact id, that row is the answer; otherwise the usual word-by-word search."""
        term = search_term.strip().strip('"')
        exact = [f[1:] for f in self.get_search_fields(request) if f.startswith("=")]
        if term and exact and any(c.isspace() for c in term):
            whole = Q()
            for field in exact:
                whole |= Q(**{field: term})  # exact: the ids' unique indexes serve it
            found = queryset.filter(whole)
            if found.exists():
                return found, False
        return super().get_search_results(request, queryset, search_term)


class ReadOnlyAdmin(LoanBookAdmin):
    """Rows written only by imports: nobody adds, edits or deletes them by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class HistoryMixin(LogEntryAdminMixin):
    """A record's field-level history from the audit log, on its admin page."""

    def field_history(self, obj) -> str:
        if obj is None or obj.pk is None:
            return "-"
        entries = (
            LogEntry.objects.get_for_object(obj).select_related("actor").order_by("-timestamp")[:50]
        )
        restricted = set(restricted_fields(obj._meta.label))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    e.timestamp.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    e.actor.get_username() if e.actor else "system",
                    e.get_action_display(),
                    "; ".join(
                        # A field restricted after the entry was written is masked here too.
                        f"{field}: {mask(old)} → {mask(new)}"
                        if field in restricted and old != REDACTED
                        else f"{field}: {old} → {new}"
                        for field, (old, new) in e.changes_dict.items()
                    )
                    or "-",
                )
                for e in entries
            ),
        )
        if not rows:
            return "No changes recorded."
        return format_html(
            "<table><tr><th>When</th><th>Who</th><th>Action</th><th>Changes</th></tr>{}</table>",
            rows,
        )

    field_history.short_description = "Change history"


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created_at",
        "source",
        "kind",
        "original_name",
        "status",
        "rows_read",
        "rows_rejected",
        "created_by",
    ]
    list_filter = ["status", "kind", "source"]
    search_fields = ["=sha256", "original_name"]
    raw_id_fields = ["created_by", "duplicate_of"]

    fields = [
        "source",
        "kind",
        "original_name",
        "raw_file",
        "full_export",
        "sha256",
        "size",
        "status",
        "duplicate_of",
        "created_by",
        "job",
        "created_at",
        "started_at",
        "finished_at",
        "rows_in",
        "load_effect",
        "diff_link",
        "errors",
        "warnings",
    ]
    readonly_fields = ["diff_link", "raw_file", "rows_in", "load_effect", "created_at"]
    actions = ["remove_demo_data"]

    @admin.display(description="Raw file")
    def raw_file(self, obj) -> str:
        # Streamed by a view that checks the role; MEDIA_ROOT is never served.
        if not obj.file:
            return "-"
        return format_html(
            '<a href="{}">{}</a> ({} bytes)',
            reverse("loans:batch_raw_file", args=[obj.pk]),
            obj.original_name or obj.file.name,
            f"{obj.size:,}",
        )

    @admin.display(description="Rows in")
    def rows_in(self, obj) -> str:
        return (
            f"{obj.rows_read:,} read: {obj.rows_inserted:,} new, {obj.rows_updated:,} updated, "
            f"{obj.rows_unchanged:,} unchanged, {obj.rows_rejected:,} rejected"
        )

    @admin.display(description="Outstanding (as the tape states it)")
    def load_effect(self, obj) -> str:
        effect = batch_load_effect(batch=obj)
        if effect is None:
            return "-"
        return (
            f"{effect.new_loans:,} new loans: {effect.new_principal:,.2f} disbursed, "
            f"{effect.new_outstanding:,.2f} outstanding added; {effect.changed_loans:,} loans "
            f"changed their outstanding by {effect.outstanding_change:+,.2f}"
        )

    def changelist_view(self, request, extra_context=None):
        # "Remove all demo data" acts on the book, not on the checked rows: with none checked,
        # the admin would refuse it ("Items must be selected"), so one row stands in for all.
        post = request.POST
        if (
            request.method == "POST"
            and post.get("action") == "remove_demo_data"
            and not post.getlist(helpers.ACTION_CHECKBOX_NAME)
        ):
            any_batch = self.get_queryset(request).values_list("pk", flat=True).first()
            if any_batch is not None:
                post = post.copy()
                post.setlist(helpers.ACTION_CHECKBOX_NAME, [str(any_batch)])
                request.POST = post
        return super().changelist_view(request, extra_context)

    def has_remove_demo_permission(self, request) -> bool:
        return request.user.is_superuser

    @admin.action(description="Remove all demo data (source demo)", permissions=["remove_demo"])
    def remove_demo_data(self, request, queryset):
        """Every demo row, batch and raw file, whatever is checked; a confirmation page first
        shows what would go."""
        if request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Remove all demo data?",
                "removal": demo_remove(dry_run=True),
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/loans/batch/demo_remove.html", context)
        removal = demo_remove()
        if not removal.batches:
            self.message_user(request, "No demo data in this book.", messages.INFO)
            return None
        message = f"Removed {removal.summary()}."
        if removal.since is not None:
            state = snapshots_recompute_queue(since=removal.since)
            message += f" Snapshots from {removal.since:%Y-%m-%d} on: recomputation {state}."
        self.message_user(request, message, messages.SUCCESS)
        return None

    @admin.display(description="Tape diff")
    def diff_link(self, obj) -> str:
        review = reverse("admin:loans_batch_review")
        if obj.kind not in (
            Batch.Kind.LOANS,
            Batch.Kind.TRANSACTIONS,
            Batch.Kind.SCHEDULES,
            Batch.Kind.CUSTOMERS,
        ):
            return format_html('<a href="{}">Changes of every batch waiting for review</a>', review)
        return format_html(
            '<a href="{}">What this batch changed</a> · '
            '<a href="{}">changes of every batch waiting for review</a>',
            reverse("admin:loans_batch_diff", args=[obj.pk]),
            f"{review}?review=pending",
        )

    def get_urls(self):
        from loans.admin_diff import batch_diff_view

        view = self.admin_site.admin_view(lambda request, pk: batch_diff_view(self, request, pk))
        review = self.admin_site.admin_view(lambda request: batch_diff_view(self, request))
        return [
            path("<int:pk>/diff/", view, name="loans_batch_diff"),
            path("review/", review, name="loans_batch_review"),
            *super().get_urls(),
        ]

    def get_queryset(self, request):
        batches = super().get_queryset(request).select_related("created_by")
        # Uploaders see their own batches; stewards and admins see all.
        if not request.user.has_perm("loans.change_loan"):
            batches = batches.filter(created_by=request.user)
        return batches


class PiiMaskingMixin:
    """Shows restricted fields masked to users without loans.view_pii."""

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if request.user.has_perm("loans.view_pii"):
            return fields
        restricted = RESTRICTED_FIELDS["loans.Customer"]
        return [f"{name}_masked" if name in restricted else name for name in fields]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.has_perm("loans.view_pii"):
            readonly += [f"{name}_masked" for name in RESTRICTED_FIELDS["loans.Customer"]]
        return readonly


def _masked(field: str):
    def display(self, obj):
        return mask(getattr(obj, field))

    display.short_description = field.replace("_", " ")
    return display


@admin.register(Customer)
class CustomerAdmin(HistoryMixin, PiiMaskingMixin, LoanBookAdmin):
    list_display = ["customer_id", "geography_city", "geography_country", "batch", "updated_at"]
    search_fields = ["=customer_id"]
    raw_id_fields = ["batch"]
    readonly_fields = ["customer_id", "batch", "created_at", "updated_at", "field_history"]

    def has_add_permission(self, request) -> bool:
        return False  # customers arrive through imports, with lineage

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# The masked stand-ins PiiMaskingMixin shows instead of each restricted field: one per field, as
# stewards may restrict any of them in the classification registry.
for _field in (f.name for f in Customer._meta.concrete_fields):
    setattr(CustomerAdmin, f"{_field}_masked", _masked(_field))


class InstallmentInline(admin.TabularInline):
    model = Installment
    fields = ["due_date", "principal", "interest", "fees", "other", "to_tax", "batch"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


class TransactionInline(admin.TabularInline):
    model = Transaction
    fields = [
        "date",
        "transaction_type",
        "principal",
        "interest",
        "fees",
        "other",
        "to_tax",
        "batch",
    ]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(Loan)
class LoanAdmin(HistoryMixin, LoanBookAdmin):
    list_display = [
        "loan_id",
        "customer",
        "company",
        "product_type",
        "disburse_date",
        "disburse_principal",
        "loan_status",
        "dpd",
    ]
    list_filter = ["company", "product_type"]
    search_fields = ["=loan_id", "=customer__customer_id"]
    raw_id_fields = ["customer", "batch"]
    list_select_related = ["customer"]
    readonly_fields = ["loan_id", "batch", "created_at", "updated_at", "field_history"]
    inlines = [InstallmentInline, TransactionInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Installment)
class InstallmentAdmin(HistoryMixin, LoanBookAdmin):
    # Newest first by primary key: the model's (loan, date) ordering would sort millions of rows
    # through a join to loans on every list page.
    ordering = ["-id"]
    list_display = ["loan", "due_date", "principal", "interest", "fees", "batch"]
    search_fields = ["=loan__loan_id"]
    raw_id_fields = ["loan", "batch"]
    list_select_related = ["loan"]
    readonly_fields = ["loan", "batch", "field_history"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Transaction)
class TransactionAdmin(HistoryMixin, ReadOnlyAdmin):
    # Newest first by primary key: the model's (loan, date) ordering would sort millions of rows
    # through a join to loans on every list page.
    ordering = ["-id"]
    list_display = ["loan", "date", "transaction_type", "principal", "interest", "fees", "batch"]
    list_filter = ["transaction_type"]
    search_fields = ["=loan__loan_id"]
    raw_id_fields = ["loan", "batch"]
    list_select_related = ["loan"]
    readonly_fields = ["field_history"]


from loans import admin_diff, admin_uploads  # noqa: E402,F401  (register the upload flow and column maps)
