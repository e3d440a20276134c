"""KPIs and the book as the snapshots see it, over /api/v1/: KPI definitions, snapshots (runs)
with their values, roll rates, vintages and top borrowers, a KPI's series over dates, and loans
filtered by their DPD at an as-of date (read from the snapshot's loan states).

As-of semantics: a snapshot is the end of day ``as_of``. A date may have two runs, *as
reported* (the first computation, kept) and *restated* (a recomputation after the data or the
definitions changed); ``basis`` picks one, and without it a date's *standing* run is read: its
restatement when it has one, else as reported. Stored snapshots never change: their responses
carry an ``ETag`` and answer ``304`` to ``If-None-Match``.
"""

from __future__ import annotations

from datetime import date

from django.db.models import Exists, OuterRef, Q
from django.urls import path
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from api.models import Scope
from api.serializers import RowSerializer
from api.views import DetailApiView, FixedRows, ListApiView, cursor_by, text
from kpis import definitions as d
from kpis.models import KpiValue, LoanState, RollRate, SnapshotRun, TopBorrower, VintagePoint
from loans.api import LOAN_ID, LoanSerializer, loans_with_customer_key
from loans.models import Customer, Loan
from loans.selectors import book_data_through

BASES = SnapshotRun.Basis.choices

# ---- serializers -------------------------------------------------------------------------------


class DefinitionSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    unit = serializers.CharField(help_text="USD, ratio (a fraction), count or index.")
    version = serializers.IntegerField()
    formula = serializers.CharField()
    dimensions = serializers.ListField(child=serializers.CharField())
    from_previous_month_end = serializers.BooleanField()


class SnapshotSerializer(RowSerializer):
    # beyond_data and data_through read the book's data-through date once per response (the
    # context's "data_through" when the view read it already), never once a row.

    beyond_data = serializers.SerializerMethodField(
        help_text="True when as_of is after the book's data-through date: the snapshot was "
        "computed (on request) past the data the book holds, as the dashboards warn."
    )
    data_through = serializers.SerializerMethodField(
        help_text="The book's data-through date now: the earliest of the latest cut-offs of "
        "the sources that feed loans (null for an empty book)."
    )

    class Meta:
        model = SnapshotRun
        fields = [
            "id",
            "as_of",
            "basis",
            "definition_version",
            "computed_at",
            "job",
            "provisional",
            "provisional_reasons",
            "restatement_reason",
            "loans",
            "beyond_data",
            "data_through",
        ]
        read_only_fields = fields

    def _data_through(self) -> date | None:
        # The root's context: one dict for the page's serializer and each of its rows.
        context = self.context
        if "data_through" not in context:
            context["data_through"] = book_data_through()
        return context["data_through"]

    def get_beyond_data(self, run: SnapshotRun) -> bool:
        through = self._data_through()
        return through is not None and run.as_of > through

    @extend_schema_field(serializers.DateField(allow_null=True))
    def get_data_through(self, run: SnapshotRun) -> str | None:
        through = self._data_through()
        return through.isoformat() if through is not None else None


class ValueSerializer(RowSerializer):
    class Meta:
        model = KpiValue
        fields = ["code", "dimension", "member", "value", "numerator", "denominator"]
        read_only_fields = fields


class SnapshotDetailSerializer(SnapshotSerializer):
    values = serializers.SerializerMethodField()

    class Meta(SnapshotSerializer.Meta):
        fields = [*SnapshotSerializer.Meta.fields, "values"]
        read_only_fields = fields

    @extend_schema_field(ValueSerializer(many=True))
    def get_values(self, run: SnapshotRun) -> list[dict]:
        return ValueSerializer(run.values.portfolio().order_by("code"), many=True).data


class SeriesPointSerializer(RowSerializer):
    run = serializers.IntegerField(source="run_id", read_only=True)
    basis = serializers.CharField(source="run.basis", read_only=True)
    provisional = serializers.BooleanField(source="run.provisional", read_only=True)

    class Meta:
        model = KpiValue
        fields = [
            "id",
            "as_of",
            "code",
            "dimension",
            "member",
            "value",
            "numerator",
            "denominator",
            "definition_version",
            "run",
            "basis",
            "provisional",
        ]
        read_only_fields = fields


class RollRateSerializer(serializers.ModelSerializer):
    class Meta:
        model = RollRate
        fields = ["id", "from_bucket", "to_bucket", "balance", "share"]
        read_only_fields = fields


class VintageSerializer(serializers.ModelSerializer):
    class Meta:
        model = VintagePoint
        fields = ["id", "cohort", "months_on_book", "disbursed", "written_off", "ever_30"]
        read_only_fields = fields


class TopBorrowerSerializer(serializers.ModelSerializer):
    customer_id = serializers.SerializerMethodField(help_text="The tape's customer_id.")

    class Meta:
        model = TopBorrower
        fields = [
            "id",
            "dimension",
            "member",
            "rank",
            "customer_id",
            "outstanding_principal",
            "loans",
        ]
        read_only_fields = fields

    def get_customer_id(self, row: TopBorrower) -> str:
        return self.context["customer_ids"].get(row.customer_id, str(row.customer_id))


class LoanStateSerializer(RowSerializer):
    as_of = serializers.DateField(source="run.as_of", read_only=True)
    basis = serializers.CharField(source="run.basis", read_only=True)

    class Meta:
        model = LoanState
        fields = [
            "id",
            "run",
            "as_of",
            "basis",
            "outstanding_principal",
            "dpd",
            "bucket",
            "written_off",
            "written_off_balance",
            "interest_rate",
        ]
        read_only_fields = fields


# ---- filters -----------------------------------------------------------------------------------

DIMENSIONS = [(dim, dim) for dim in d.DIMENSIONS]
# DPD fits a PostgreSQL integer; bounds keep nonsense out of the query.
DPD_MAX = 100_000


class LoanFilters(serializers.Serializer):
    entity = text(required=False, max_length=32, help_text="The lending entity.")
    product = text(required=False, max_length=64)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False)
    status = text(required=False, max_length=32, help_text="The tape's loan_status.")
    disbursed_from = serializers.DateField(required=False)
    disbursed_to = serializers.DateField(required=False)
    dpd_min = serializers.IntegerField(required=False, min_value=0, max_value=DPD_MAX)
    dpd_max = serializers.IntegerField(required=False, min_value=0, max_value=DPD_MAX)
    as_of = serializers.DateField(
        required=False,
        help_text="The snapshot date the DPD filters read (default: the latest snapshot); "
        "404 when no snapshot has this date. Without a DPD filter it changes nothing.",
    )
    basis = serializers.ChoiceField(choices=BASES, required=False)


class SnapshotFilters(serializers.Serializer):
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)
    basis = serializers.ChoiceField(choices=BASES, required=False)


class SeriesFilters(serializers.Serializer):
    code = serializers.ChoiceField(choices=[(k.code, k.code) for k in d.KPIS])
    dimension = serializers.ChoiceField(choices=DIMENSIONS, default="portfolio")
    member = serializers.RegexField(
        r"^[^\x00-\x1f\x7f]*$",
        required=False,
        default="",
        allow_blank=True,
        max_length=64,
        help_text="The slice's member (an entity, product, currency or segment); empty for the portfolio.",
    )
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)
    basis = serializers.ChoiceField(
        choices=BASES,
        required=False,
        help_text="Default: each date's standing run (restated when it was, else as reported).",
    )


class SliceFilters(serializers.Serializer):
    dimension = serializers.ChoiceField(choices=DIMENSIONS, required=False)
    member = text(required=False, max_length=64)


# ---- views ---------------------------------------------------------------------------------------


def _run_at(as_of, basis) -> SnapshotRun:
    runs = SnapshotRun.objects.all()
    if as_of is not None:
        runs = runs.of_date(as_of)
    runs = runs.filter(basis=basis) if basis else runs.standing()
    run = runs.order_by("-as_of").first()
    if run is None:
        raise exceptions.NotFound("No snapshot on this as_of date and basis.")
    return run


class LoanList(ListApiView):
    """Loans in id order, filtered by entity, product, currency, the tape's status, disbursement
    dates, and DPD range at a snapshot date (`as_of`, default the latest; a date's standing run
    unless `basis` says which). With a DPD filter only loans with a balance at that date match."""

    scope, permission = Scope.READ_BOOK, "loans.view_loan"
    serializer_class = LoanSerializer
    filters_class = LoanFilters

    def rows(self, filters):
        loans = loans_with_customer_key()
        simple = {
            "entity": "company",
            "product": "product_type",
            "currency": "currency",
            "status": "loan_status",
            "disbursed_from": "disburse_date__gte",
            "disbursed_to": "disburse_date__lte",
        }
        loans = loans.filter(**{simple[k]: v for k, v in filters.items() if k in simple})
        if "dpd_min" in filters or "dpd_max" in filters:
            run = _run_at(filters.get("as_of"), filters.get("basis"))
            states = LoanState.objects.filter(run=run, loan=OuterRef("pk"))
            if "dpd_min" in filters:
                states = states.filter(dpd__gte=filters["dpd_min"])
            if "dpd_max" in filters:
                states = states.filter(dpd__lte=filters["dpd_max"])
            loans = loans.filter(Exists(states))
        return loans


@extend_schema(parameters=[LOAN_ID])
class LoanStates(ListApiView):
    """The loan's state (balance, DPD, bucket) at every snapshot that holds it, newest first."""

    scope, permission = Scope.READ_BOOK, "loans.view_loan"
    serializer_class = LoanStateSerializer
    pagination_class = cursor_by("-run_id", "id")

    def rows(self, filters):
        loan = Loan.objects.filter(loan_id=self.kwargs["loan_id"]).first()
        if loan is None:
            raise exceptions.NotFound("No loan with this loan_id.")
        # Per run (the index is run first): a probe per snapshot, as on the loan page.
        return LoanState.objects.filter(
            loan=loan, run__in=SnapshotRun.objects.values("pk")
        ).select_related("run")


class DefinitionList(ListApiView):
    """Every KPI's definition: code, name, unit, version and formula, in code order."""

    scope, permission = Scope.READ_KPIS, "kpis.view_dashboard"
    serializer_class = DefinitionSerializer
    pagination_class = cursor_by("code")

    def rows(self, filters):
        return FixedRows(
            {
                "code": k.code,
                "name": k.name,
                "unit": k.unit,
                "version": k.version,
                "formula": k.formula,
                "dimensions": list(k.dimensions),
                "from_previous_month_end": k.from_previous_month_end,
            }
            for k in d.KPIS
        )


class SnapshotList(ListApiView):
    """Snapshots (runs), newest date first: as-of date, basis, provisional flag and reasons."""

    scope, permission = Scope.READ_KPIS, "kpis.view_dashboard"
    serializer_class = SnapshotSerializer
    filters_class = SnapshotFilters
    pagination_class = cursor_by("-as_of", "basis")

    def rows(self, filters):
        runs = SnapshotRun.objects.all()
        if "date_from" in filters:
            runs = runs.filter(as_of__gte=filters["date_from"])
        if "date_to" in filters:
            runs = runs.filter(as_of__lte=filters["date_to"])
        if "basis" in filters:
            runs = runs.filter(basis=filters["basis"])
        return runs


IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="An ETag from an earlier response: 304 when the snapshot is unchanged.",
)


class _OfSnapshot:
    """Snapshot resources: 404 for an unknown run; ETag and If-None-Match (304)."""

    conditional = True  # the schema documents 304
    kwargs: dict

    def run(self) -> SnapshotRun:
        found = SnapshotRun.objects.filter(pk=self.kwargs["pk"]).first()
        if found is None:
            raise exceptions.NotFound("No snapshot with this id.")
        return found

    @staticmethod
    def etag(run: SnapshotRun, what: str, *, through: date | None = None) -> str:
        """The run and when it was computed; with ``through``, also the book's data-through
        date, which ``beyond_data`` reads (a later tape changes it, not the run)."""
        tag = f"{what}-{run.pk}-{run.computed_at.timestamp():.6f}"
        return f'"{tag}-{through.isoformat()}"' if through is not None else f'"{tag}"'

    def not_modified(self, request, tag: str) -> Response | None:
        asked = request.headers.get("If-None-Match", "")
        if tag in [t.strip() for t in asked.split(",")] or asked.strip() == "*":
            return Response(status=304, headers={"ETag": tag})
        return None


@extend_schema(
    parameters=[IF_NONE_MATCH],
    responses=SnapshotDetailSerializer,
)
class SnapshotDetail(_OfSnapshot, DetailApiView):
    """One snapshot with its portfolio KPI values (ETag; 304 to a matching If-None-Match)."""

    scope, permission = Scope.READ_KPIS, "kpis.view_dashboard"
    serializer_class = SnapshotDetailSerializer

    def retrieve(self, request, *args, **kwargs):
        run = self.run()
        through = book_data_through()
        tag = self.etag(run, "snapshot", through=through)
        if (unchanged := self.not_modified(request, tag)) is not None:
            return unchanged
        self.access_record(obj=run, rows=1)
        context = self.get_serializer_context() | {"data_through": through}
        return Response(self.get_serializer(run, context=context).data, headers={"ETag": tag})


class _SnapshotList(_OfSnapshot, ListApiView):
    """A list of one snapshot's rows, with the snapshot's ETag."""

    scope, permission = Scope.READ_KPIS, "kpis.view_dashboard"

    def list(self, request, *args, **kwargs):
        run = self.run()
        # Bad filters or page size answer 400 even when the ETag matches.
        self.filters()
        self.paginator.get_page_size(request)
        tag = self.etag(run, f"{type(self).__name__}-{request.get_full_path()}")
        if (unchanged := self.not_modified(request, tag)) is not None:
            return unchanged
        response = super().list(request, *args, **kwargs)
        response["ETag"] = tag
        return response


SNAPSHOT_LIST_SCHEMA = extend_schema(parameters=[IF_NONE_MATCH])


@SNAPSHOT_LIST_SCHEMA
class SnapshotValues(_SnapshotList):
    """Every KPI value of the snapshot, for every slice (or one dimension / member)."""

    serializer_class = ValueSerializer
    filters_class = SliceFilters

    def rows(self, filters):
        return KpiValue.objects.filter(run=self.run(), **filters)


@SNAPSHOT_LIST_SCHEMA
class SnapshotRollRates(_SnapshotList):
    """Balance-weighted DPD bucket transitions from the previous month-end to the snapshot."""

    serializer_class = RollRateSerializer

    def rows(self, filters):
        return RollRate.objects.filter(run=self.run())


@SNAPSHOT_LIST_SCHEMA
class SnapshotVintages(_SnapshotList):
    """Vintage points at the snapshot: per cohort, written-off and ever-30+ principal."""

    serializer_class = VintageSerializer
    pagination_class = cursor_by("cohort", "id")

    def rows(self, filters):
        return VintagePoint.objects.filter(run=self.run())


@SNAPSHOT_LIST_SCHEMA
class SnapshotTopBorrowers(_SnapshotList):
    """The customers with the largest outstanding principal per slice, by rank (no names)."""

    serializer_class = TopBorrowerSerializer
    filters_class = SliceFilters
    pagination_class = cursor_by("dimension", "member", "rank")

    def rows(self, filters):
        return TopBorrower.objects.filter(run=self.run(), **filters)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        ids = TopBorrower.objects.filter(run_id=self.kwargs["pk"]).values("customer_id")
        context["customer_ids"] = dict(
            Customer.objects.filter(pk__in=ids).values_list("pk", "customer_id")
        )
        return context


class Series(ListApiView):
    """One KPI for one slice over dates, oldest first: its value, numerator and denominator at
    each snapshot date, from each date's standing run unless `basis` names one."""

    scope, permission = Scope.READ_KPIS, "kpis.view_dashboard"
    serializer_class = SeriesPointSerializer
    filters_class = SeriesFilters
    pagination_class = cursor_by("as_of", "id")

    def rows(self, filters):
        points = KpiValue.objects.filter(
            code=filters["code"], dimension=filters["dimension"], member=filters["member"]
        ).select_related("run")
        if "date_from" in filters:
            points = points.filter(as_of__gte=filters["date_from"])
        if "date_to" in filters:
            points = points.filter(as_of__lte=filters["date_to"])
        if "basis" in filters:
            return points.filter(run__basis=filters["basis"])
        restated = SnapshotRun.objects.restated().filter(as_of=OuterRef("as_of"))
        return points.exclude(Q(run__basis=SnapshotRun.Basis.AS_REPORTED) & Exists(restated))


urlpatterns = [
    path("loans/", LoanList.as_view(), name="loans"),
    path("loans/<str:loan_id>/states/", LoanStates.as_view(), name="loan-states"),
    path("kpis/definitions/", DefinitionList.as_view(), name="kpi-definitions"),
    path("kpis/series/", Series.as_view(), name="kpi-series"),
    path("kpis/snapshots/", SnapshotList.as_view(), name="snapshots"),
    path("kpis/snapshots/<int:pk>/", SnapshotDetail.as_view(), name="snapshot"),
    path("kpis/snapshots/<int:pk>/values/", SnapshotValues.as_view(), name="snapshot-values"),
    path(
        "kpis/snapshots/<int:pk>/roll-rates/",
        SnapshotRollRates.as_view(),
        name="snapshot-roll-rates",
    ),
    path("kpis/snapshots/<int:pk>/vintages/", SnapshotVintages.as_view(), name="snapshot-vintages"),
    path(
        "kpis/snapshots/<int:pk>/top-borrowers/",
        SnapshotTopBorrowers.as_view(),
        name="snapshot-top-borrowers",
    ),
]
