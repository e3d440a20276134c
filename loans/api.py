"""The loan book over /api/v1/: customers (personal fields masked unless cleared), a loan and its
schedule, cash flows and change history, batches, and uploads (the admin's preview, validation
and quarantine rules: ``loans.services.upload_preview`` / ``upload_queue`` / the load task).

The loan list lives in ``kpis/api.py``: its DPD filter reads the snapshots' loan states.
"""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.http import FileResponse
from django.urls import path, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from api.auth import pii_cleared
from api.errors import Unprocessable
from api.models import Scope
from api.serializers import RowSerializer
from api.views import ApiView, CsvRenderer, DetailApiView, ListApiView, cursor_by, text
from compliance.classification import RESTRICTED_FIELDS, mask
from loans.lineage import TapeRejected
from loans.models import Batch, BatchChange, Customer, Installment, Loan, Transaction, Upload
from loans.services import upload_preview, upload_queue

MAX_PROBLEMS = 1000  # an upload keeps (and the API lists) at most this many problems

# ---- serializers -------------------------------------------------------------------------------


class RestrictedField(serializers.CharField):
    """A personal field: its value for cleared callers, masked (•••) for everyone else."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault(
            "help_text",
            "Personal data: masked unless the token has read:pii and the role is cleared.",
        )
        super().__init__(**kwargs)

    def to_representation(self, value) -> str:
        text = value.isoformat() if hasattr(value, "isoformat") else str(value or "")
        return text if self.context.get("pii") else mask(text)


class CustomerSerializer(RowSerializer):
    segment = serializers.CharField(
        read_only=True, help_text="new, recurrent, reactivated, recovered; empty until segmented."
    )

    class Meta:
        model = Customer
        fields = [
            "id",
            "customer_id",
            "customer_type",
            "income",
            "currency",
            "gender",
            "channel_type",
            "dependents",
            "geography_city",
            "geography_state",
            "geography_country",
            "segment",
            "sector",
            "size",
            *RESTRICTED_FIELDS["loans.Customer"],
            "batch",
            "updated_at",
        ]
        read_only_fields = fields

    def build_field(self, field_name, info, model_class, nested_depth):
        if field_name in RESTRICTED_FIELDS["loans.Customer"]:
            return RestrictedField, {}
        return super().build_field(field_name, info, model_class, nested_depth)


class LoanSerializer(RowSerializer):
    customer_id = serializers.CharField(source="customer_key", read_only=True)

    class Meta:
        model = Loan
        fields = [
            "id",
            "loan_id",
            "customer_id",
            "company",
            "product_type",
            "loan_grade",
            "lender",
            "facility",
            "application_date",
            "disburse_date",
            "pledge_date",
            "maturity_date",
            "disburse_principal",
            "total_fees",
            "total_other",
            "total_interest",
            "credit_bureau_score",
            "term",
            "frequency",
            "interest_rate",
            "currency",
            "outstanding_balance",
            "dpd",
            "ratio_paid",
            "loan_status",
            "repaid_on",
            "batch",
            "updated_at",
        ]
        read_only_fields = fields


CASH_PARTS = [
    "principal",
    "interest",
    "other",
    "fees",
    "to_tax",
    "add_balance",
    "reduce_balance",
    "currency",
    "batch",
]


def loans_with_customer_key():
    """Loans with their customer's tape id (``customer_key``), without reading the customer's
    other (personal) columns."""
    return Loan.objects.annotate(customer_key=F("customer__customer_id"))


class InstallmentSerializer(RowSerializer):
    class Meta:
        model = Installment
        fields = ["id", "due_date", *CASH_PARTS]
        read_only_fields = fields


class TransactionSerializer(RowSerializer):
    class Meta:
        model = Transaction
        fields = ["id", "transaction_type", "date", "sequence", *CASH_PARTS]
        read_only_fields = fields


class BatchChangeSerializer(serializers.ModelSerializer):
    batch_created_at = serializers.DateTimeField(source="batch.created_at", read_only=True)
    fields = serializers.JSONField(help_text="field -> [before, after]", read_only=True)
    review = serializers.CharField(
        read_only=True, help_text="pending, accepted or rejected; empty when none is needed."
    )

    class Meta:
        model = BatchChange
        fields = [
            "id",
            "batch",
            "batch_created_at",
            "kind",
            "key",
            "change",
            "fields",
            "review",
            "review_reason",
            "reviewed_at",
        ]
        read_only_fields = fields


class BatchSerializer(serializers.ModelSerializer):
    error_count = serializers.SerializerMethodField()
    warning_count = serializers.SerializerMethodField()

    class Meta:
        model = Batch
        fields = [
            "id",
            "source",
            "kind",
            "original_name",
            "sha256",
            "size",
            "job",
            "status",
            "duplicate_of",
            "created_at",
            "started_at",
            "finished_at",
            "rows_read",
            "rows_inserted",
            "rows_updated",
            "rows_unchanged",
            "rows_rejected",
            "error_count",
            "warning_count",
        ]
        read_only_fields = fields

    def get_error_count(self, batch: Batch) -> int:
        return len(batch.errors)

    def get_warning_count(self, batch: Batch) -> int:
        return len(batch.warnings)


class ProblemRowSerializer(serializers.Serializer):
    file = serializers.CharField()
    row = serializers.IntegerField(allow_null=True, help_text="1 is the header line.")
    column = serializers.CharField(allow_blank=True)
    value = serializers.CharField(allow_blank=True, allow_null=True)
    reason = serializers.CharField()
    severity = serializers.CharField()


class UploadSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    rejects_url = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    problems = ProblemRowSerializer(many=True, read_only=True)
    batches = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = Upload
        fields = [
            "id",
            "url",
            "kind",
            "source",
            "full_export",
            "data_through",
            "quarantine",
            "status",
            "progress",
            "progress_label",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "summary",
            "problems",
            "rejects_url",
            "batches",
        ]
        read_only_fields = fields

    def get_url(self, upload: Upload) -> str:
        return reverse("api:upload", args=[upload.pk])

    def get_rejects_url(self, upload: Upload) -> str | None:
        return reverse("api:upload-rejects", args=[upload.pk]) if upload.rejects else None


class UploadPreviewSerializer(serializers.Serializer):
    """What the dry run found: rows per file and every problem (as the admin's preview page)."""

    files = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    problems = ProblemRowSerializer(many=True)
    fatal = serializers.BooleanField(help_text="True: nothing of this file can load.")


class UploadAcceptedSerializer(serializers.Serializer):
    upload = UploadSerializer()
    preview = UploadPreviewSerializer(allow_null=True)


class UploadCreateSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A CSV, XLSX or a ZIP of tape CSV files.")
    kind = serializers.ChoiceField(choices=Upload.Kind.choices, default=Upload.Kind.TAPE)
    source = serializers.RegexField(
        r"^[A-Za-z0-9_.-]{1,64}$", default="cascade", help_text="Who sent it; picks the column map."
    )
    full_export = serializers.BooleanField(
        default=False,
        help_text="The source's whole book: its loans missing from the file are then flagged as "
        "vanished for review. Leave false for a partial file (some loans, new payments).",
    )
    data_through = serializers.DateField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The date the file's data runs to, when the export says so; otherwise its "
        "latest transaction or disbursement date.",
    )
    quarantine = serializers.BooleanField(
        default=False,
        help_text="Load the valid rows and quarantine the rest (else all or nothing).",
    )
    dry_run = serializers.BooleanField(
        default=False,
        help_text="Only preview: keep the upload as a draft; POST its load URL to load it.",
    )

    def validate(self, attrs: dict) -> dict:
        # A misspelt option (``quarantaine``) must not load a file the caller meant to hold back.
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name or "(empty name)": ["not a field of an upload"] for name in unknown}
            )
        return attrs


# ---- filters -----------------------------------------------------------------------------------


class CustomerFilters(serializers.Serializer):
    segment = text(required=False, max_length=16)
    country = text(required=False, max_length=3)


class BatchFilters(serializers.Serializer):
    source = text(required=False, max_length=64)
    kind = serializers.ChoiceField(choices=Batch.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=Batch.Status.choices, required=False)


class UploadFilters(serializers.Serializer):
    status = serializers.ChoiceField(choices=Upload.Status.choices, required=False)


# ---- views ---------------------------------------------------------------------------------------

LOAN_ID = OpenApiParameter("loan_id", str, OpenApiParameter.PATH, description="The tape's loan_id.")


class CustomerList(ListApiView):
    """Customers in id order. Personal fields masked unless `read:pii` and the role is cleared."""

    scope, permission = Scope.READ_BOOK, "loans.view_customer"
    serializer_class = CustomerSerializer
    filters_class = CustomerFilters

    def get_serializer_context(self):
        return super().get_serializer_context() | {"pii": pii_cleared(self.request)}

    def rows(self, filters):
        customers = Customer.objects.all()
        if "segment" in filters:
            customers = customers.filter(segment=filters["segment"])
        if "country" in filters:
            customers = customers.filter(geography_country=filters["country"])
        return customers


class CustomerDetail(DetailApiView):
    """One customer by the tape's customer_id."""

    scope, permission = Scope.READ_BOOK, "loans.view_customer"
    serializer_class = CustomerSerializer
    queryset = Customer.objects.all()
    lookup_field = "customer_id"

    def get_serializer_context(self):
        return super().get_serializer_context() | {"pii": pii_cleared(self.request)}


class LoanDetail(DetailApiView):
    """One loan by the tape's loan_id, as the latest tape describes it."""

    scope, permission = Scope.READ_BOOK, "loans.view_loan"
    serializer_class = LoanSerializer
    lookup_field = "loan_id"

    def get_queryset(self):
        return loans_with_customer_key()


class _OfLoan(ListApiView):
    """A list of one loan's rows: 404 when the loan does not exist."""

    def loan(self) -> Loan:
        found = Loan.objects.filter(loan_id=self.kwargs["loan_id"]).first()
        if found is None:
            raise exceptions.NotFound("No loan with this loan_id.")
        return found


@extend_schema(parameters=[LOAN_ID])
class LoanInstallments(_OfLoan):
    """The loan's expected schedule (installments), in due-date order."""

    scope, permission = Scope.READ_BOOK, "loans.view_installment"
    serializer_class = InstallmentSerializer
    pagination_class = cursor_by("due_date")

    def rows(self, filters):
        return Installment.objects.filter(loan=self.loan())


@extend_schema(parameters=[LOAN_ID])
class LoanTransactions(_OfLoan):
    """The loan's cash flows (disbursements, payments, write-offs...), oldest first."""

    scope, permission = Scope.READ_BOOK, "loans.view_transaction"
    serializer_class = TransactionSerializer
    pagination_class = cursor_by("date", "transaction_type", "sequence")

    def rows(self, filters):
        return Transaction.objects.filter(loan=self.loan())


@extend_schema(parameters=[LOAN_ID])
class LoanChanges(_OfLoan):
    """What each tape load changed in the loan, its schedule and its cash flows (newest first)."""

    scope, permission = Scope.READ_BOOK, "loans.view_batchchange"
    serializer_class = BatchChangeSerializer
    pagination_class = cursor_by("-id")

    def rows(self, filters):
        loan_id = self.loan().loan_id
        return BatchChange.objects.filter(
            Q(key=loan_id) | Q(key__startswith=f"{loan_id} ")
        ).select_related("batch")


class BatchList(ListApiView):
    """Batches (files and fetches), newest first."""

    scope, permission = Scope.READ_BOOK, "loans.view_batch"
    serializer_class = BatchSerializer
    filters_class = BatchFilters
    pagination_class = cursor_by("-id")

    def rows(self, filters):
        batches = Batch.objects.all()
        for name in ("source", "kind", "status"):
            if name in filters:
                batches = batches.filter(**{name: filters[name]})
        return batches


class BatchDetail(DetailApiView):
    scope, permission = Scope.READ_BOOK, "loans.view_batch"
    serializer_class = BatchSerializer
    queryset = Batch.objects.all()


def _uploads_of(request):
    """An uploader sees their own uploads; stewards and admins every upload (as in the admin)."""
    uploads = Upload.objects.select_related("created_by").prefetch_related("batches")
    if not request.user.has_perm("loans.change_loan"):
        uploads = uploads.filter(created_by=request.user)
    return uploads


def _preview_of(result, fatal) -> dict:
    problems = fatal if fatal is not None else result.problems
    return {
        "files": [
            {
                "file": f.tape_file.name,
                "rows_read": f.rows_read,
                "would_insert": f.inserted,
                "would_update": f.updated,
                "rejected": f.rejected,
            }
            for f in (result.files if result is not None else [])
        ],
        "problems": [p.as_dict() | {"severity": p.severity} for p in problems[:MAX_PROBLEMS]],
        "fatal": fatal is not None,
    }


def _preview_or_refuse(view: ApiView, upload: Upload) -> dict | None:
    """The admin's rule before a load: a tape is previewed (dry run); it may load when nothing
    in it is fatal and it has no errors, or its errors are to be quarantined. Else 422."""
    if upload.kind != Upload.Kind.TAPE:
        return None
    result, fatal = None, None
    try:
        result = upload_preview(upload=upload)
    except TapeRejected as rejected:
        fatal = rejected.problems
    preview = _preview_of(result, fatal)
    if fatal is not None:
        refused = fatal
    else:
        assert result is not None  # a dry run returns its findings or raises TapeRejected
        refused = [] if upload.quarantine else result.errors
    if refused:
        view.access_action = "create"
        view.access_record(obj=upload, rows=0, status=422)
        exc = Unprocessable(
            f"Nothing of this file will load as it is: {len(refused)} problem(s); fix the file "
            "or choose quarantine, and upload again."
        )
        exc.problem_extra = {
            "upload": reverse("api:upload", args=[upload.pk]),
            "errors": {"file": [str(p) for p in refused[:MAX_PROBLEMS]]},
        }
        raise exc
    return preview


class UploadList(ListApiView):
    """GET: uploads, newest first (an uploader's own; every upload for stewards).

    POST: upload a file to load, as the admin does: a dry run first (mapping, every problem),
    then the task cluster loads it. `202` with the upload's URL (`Location`) to follow its
    status; `dry_run=true` only previews (`200`) and keeps a draft to load later. A file no row
    of which can load answers `422` with its problems. The same `Idempotency-Key` header from the
    same user answers with the first upload instead of creating another."""

    scope, permission = Scope.READ_BOOK, "loans.view_upload"
    write_scope, write_permission = Scope.WRITE_UPLOADS, "loans.add_upload"
    serializer_class = UploadSerializer
    filters_class = UploadFilters
    pagination_class = cursor_by("-id")
    parser_classes = [MultiPartParser]
    extra_error_codes = (422,)

    def body_limit(self) -> int:
        if self.request.method == "POST":
            return settings.API_UPLOAD_MAX_BYTES
        return super().body_limit()

    def rows(self, filters):
        uploads = _uploads_of(self.request)
        if "status" in filters:
            uploads = uploads.filter(status=filters["status"])
        return uploads

    @extend_schema(
        request=UploadCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="Any string up to 128 characters; a retry with it creates nothing.",
            )
        ],
        responses={200: UploadAcceptedSerializer, 202: UploadAcceptedSerializer},
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key", "")
        if len(key) > 128:
            raise exceptions.ValidationError({"Idempotency-Key": ["at most 128 characters"]})
        if key:
            earlier = _uploads_of(request).filter(idempotency_key=key).first()
            if earlier is not None:
                return self._answer(earlier, None, replay=True)
        form = UploadCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            with transaction.atomic():
                # As the admin's form saves it (loans.admin_uploads), with the file's own name:
                # storage may rename it, and a tape file's kind is read from its name.
                upload = Upload.objects.create(
                    kind=data["kind"],
                    source=data["source"],
                    file=data["file"],
                    original_name=data["file"].name,
                    full_export=data["full_export"],
                    data_through=data["data_through"],
                    quarantine=data["quarantine"],
                    created_by=request.user,
                    idempotency_key=key,
                )
        except IntegrityError:  # the same key raced in twice: answer with the first
            return self._answer(_uploads_of(request).get(idempotency_key=key), None, replay=True)
        preview = _preview_or_refuse(self, upload)
        if not data["dry_run"]:
            upload_queue(upload=upload)
        return self._answer(upload, preview, replay=False)

    def _answer(self, upload: Upload, preview, *, replay: bool) -> Response:
        self.access_action = "create"
        code = (
            status.HTTP_200_OK if upload.status == Upload.Status.DRAFT else status.HTTP_202_ACCEPTED
        )
        self.access_record(obj=upload, rows=1, status=code)
        body = {"upload": UploadSerializer(upload).data, "preview": preview}
        response = Response(body, status=code)
        response["Location"] = reverse("api:upload", args=[upload.pk])
        if replay:
            response["Idempotent-Replayed"] = "true"
        return response


class UploadDetail(DetailApiView):
    """An upload's status, progress, summary, problems and the URL of its rejected rows."""

    scope, permission = Scope.READ_BOOK, "loans.view_upload"
    serializer_class = UploadSerializer

    def get_queryset(self):
        return _uploads_of(self.request)


class UploadLoad(ApiView):
    """Load a draft (an upload posted with `dry_run=true`): `202`, or `409` if already sent."""

    scope, permission = Scope.WRITE_UPLOADS, "loans.add_upload"
    access_action = "create"
    extra_error_codes = (409, 422)
    serializer_class = UploadSerializer

    def get_queryset(self):
        return _uploads_of(self.request)

    @extend_schema(request=None, responses={202: UploadSerializer})
    def post(self, request, pk: int):
        upload = self.get_object()
        if upload.status == Upload.Status.DRAFT:
            _preview_or_refuse(self, upload)  # the file is checked again, as the admin's confirm
        if not upload_queue(upload=upload):
            raise Conflict("This upload was already sent to load.")
        self.access_record(obj=upload, rows=1, status=202)
        response = Response(UploadSerializer(upload).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = reverse("api:upload", args=[upload.pk])
        return response


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."


class UploadRejects(ApiView):
    """The rows a load rejected (or quarantined), as CSV: file, row, column, value, reason."""

    scope, permission = Scope.READ_BOOK, "loans.view_upload"
    renderer_classes = [CsvRenderer]

    def get_queryset(self):
        return _uploads_of(self.request)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request, pk: int):
        upload = self.get_object()
        if not upload.rejects:
            raise exceptions.NotFound("This upload has no rejected rows.")
        self.access_record(obj=upload, rows=-1)
        return FileResponse(
            upload.rejects.open("rb"),
            as_attachment=True,
            filename=f"upload-{upload.pk}-rejected-rows.csv",
            content_type="text/csv",
        )


urlpatterns = [
    path("customers/", CustomerList.as_view(), name="customers"),
    path("customers/<str:customer_id>/", CustomerDetail.as_view(), name="customer"),
    path("loans/<str:loan_id>/", LoanDetail.as_view(), name="loan"),
    path("loans/<str:loan_id>/installments/", LoanInstallments.as_view(), name="loan-installments"),
    path("loans/<str:loan_id>/transactions/", LoanTransactions.as_view(), name="loan-transactions"),
    path("loans/<str:loan_id>/changes/", LoanChanges.as_view(), name="loan-changes"),
    path("batches/", BatchList.as_view(), name="batches"),
    path("batches/<int:pk>/", BatchDetail.as_view(), name="batch"),
    path("uploads/", UploadList.as_view(), name="uploads"),
    path("uploads/<int:pk>/", UploadDetail.as_view(), name="upload"),
    path("uploads/<int:pk>/load/", UploadLoad.as_view(), name="upload-load"),
    path("uploads/<int:pk>/rejects/", UploadRejects.as_view(), name="upload-rejects"),
]
