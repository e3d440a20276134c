"""The incremental daily snapshot (issue 21, part 3): a date's loan states carried forward from
the day before's stored run, only the touched loans recomputed, proved equal to a full
computation value by value on a book with payments, partial payments, write-offs, a backdated
correction, a new loan and edits by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.test import override_settings

from integrations.models import PipelineRun
from integrations.pipelines import pipeline_run
from kpis.engine import snapshot_compute
from kpis.engine.runs import run_delete
from kpis.models import (
    KpiValue,
    LoanResidual,
    LoanState,
    MonthOpening,
    RollRate,
    SnapshotRun,
    TopBorrower,
    VintagePoint,
)
from loans.models import Batch, Customer, Installment, Loan, Transaction
from loans.services import tape_import
from tests.base import CastTestCase
from tests.factories import batch_create, installment_create, loan_create, transaction_create
from tests.loans.tape_files import tape_valid, tape_write

MADRID = ZoneInfo("Europe/Madrid")
BASE = date(2025, 11, 20)  # the demo book's data runs to 2025-11-30


def stored(run: SnapshotRun) -> dict[str, object]:
    """Every value a run stored, as sets of rows without their ids."""
    return {
        "loans": run.loans,
        "states": set(
            LoanState.objects.filter(run=run).values_list(
                "loan_id",
                "customer_id",
                "company",
                "product_type",
                "currency",
                "segment",
                "interest_rate",
                "outstanding_principal",
                "dpd",
                "bucket",
                "written_off",
                "written_off_balance",
            )
        ),
        "residuals": set(LoanResidual.objects.filter(run=run).values_list("loan_id", "balance")),
        "values": set(
            KpiValue.objects.filter(run=run).values_list(
                "code", "dimension", "member", "value", "numerator", "denominator"
            )
        ),
        "roll_rates": set(
            RollRate.objects.filter(run=run).values_list(
                "from_bucket", "to_bucket", "balance", "share"
            )
        ),
        "vintages": set(
            VintagePoint.objects.filter(run=run).values_list(
                "cohort", "months_on_book", "disbursed", "written_off", "ever_30"
            )
        ),
        "top_borrowers": set(
            TopBorrower.objects.filter(run=run).values_list(
                "dimension", "member", "rank", "customer_id", "outstanding_principal", "loans"
            )
        ),
    }


# Carried forward however many loans were touched: the proof compares every date.
@override_settings(KPI_CARRY_MAX_TOUCHED=float("inf"))
class IncrementalSnapshotTests(CastTestCase):
    """The demo book (payments, partial payments, write-offs), its snapshot of BASE computed in
    full, then day after day an incremental run beside a full one of the same date."""

    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        with time_machine.travel(datetime(2025, 12, 1, 9, 0, tzinfo=MADRID)):
            call_command(
                "demo_data", "--loans", "300", "--customers", "60", "--seed", "5", stdout=StringIO()
            )

    def assertCarriedEqualsFull(self, as_of: date) -> SnapshotRun:
        """Computes ``as_of`` in full, keeps what it stored, deletes it; computes it again
        carried forward and asserts every stored value equal. Returns the carried run (which
        stays, so the next date carries from it)."""
        full = snapshot_compute(as_of=as_of, job="test", carry=False)
        self.assertIsNone(full.carried_from)
        expected = stored(full)
        with connection.cursor() as cursor:
            run_delete(cursor, full)
        carried = snapshot_compute(as_of=as_of, job="test")
        self.assertIsNotNone(carried.carried_from, "computed in full: nothing to compare")
        self.assertLess(carried.touched_loans, Loan.objects.count())
        got = stored(carried)
        for part, rows in expected.items():
            self.assertEqual(got[part], rows, f"{as_of}: {part} differ")
        return carried

    def test_the_book_has_what_the_proof_needs(self):
        payments = Transaction.objects.filter(transaction_type="PAYMENT")
        self.assertTrue(payments.filter(date__gt=BASE).exists())
        self.assertTrue(Transaction.objects.filter(transaction_type="WRITE_OFF").exists())
        # Partial payments: a payment smaller than an installment of its loan.
        smaller = Installment.objects.filter(
            loan=OuterRef("loan"), principal__gt=OuterRef("principal")
        )
        self.assertTrue(payments.filter(principal__gt=0).filter(Exists(smaller)).exists())

    def test_day_after_day_every_stored_value_equals_a_full_computation(self):
        # The month-end before (rates and roll rates read it), then BASE, in full.
        snapshot_compute(as_of=date(2025, 10, 31), job="test", carry=False)
        snapshot_compute(as_of=BASE, job="test", carry=False)
        # A day of payments and installments falling due, the calendar moving DPD on.
        run = self.assertCarriedEqualsFull(BASE + timedelta(days=1))
        self.assertEqual(run.carried_from.as_of, BASE)
        states = LoanState.objects.filter(run=run)
        self.assertTrue(states.filter(dpd__gt=0).exists())
        self.assertTrue(states.filter(written_off=True).exists())

        # A new loan disbursed that day, with its schedule; a write-off and a partial payment
        # booked, each by a load of its own.
        day = BASE + timedelta(days=2)
        loans = batch_create(kind=Batch.Kind.LOANS, changes_from=day, data_through=day)
        cash = batch_create(kind=Batch.Kind.TRANSACTIONS, changes_from=day, data_through=day)
        customer = Customer.objects.order_by("pk").first()
        new = loan_create(
            disburse_date=day, customer=customer, batch=loans, disburse_principal=Decimal("5000")
        )
        for months in (1, 2):
            installment_create(
                loan=new, due_date=day + timedelta(days=30 * months), principal=Decimal("2500")
            )
        live = LoanState.objects.filter(run=run, written_off=False, dpd__gt=0).order_by("loan_id")
        victim, payer = (Loan.objects.get(pk=state.loan_id) for state in live[:2])
        transaction_create(
            loan=victim, transaction_type="WRITE_OFF", date=day, batch=cash, principal=0
        )
        transaction_create(loan=payer, date=day, batch=cash, principal=Decimal("7.50"))
        loans_before = Loan.objects.count()
        run = self.assertCarriedEqualsFull(day)
        self.assertTrue(LoanState.objects.filter(run=run, loan=new).exists())
        self.assertTrue(LoanState.objects.get(run=run, loan=victim).written_off)
        self.assertEqual(Loan.objects.count(), loans_before)

        # A backdated correction: a payment of last spring was bigger than the tape said.
        day = BASE + timedelta(days=3)
        old = Transaction.objects.filter(transaction_type="PAYMENT", date__lt=BASE).order_by(
            "-principal"
        )[0]
        fix = batch_create(kind=Batch.Kind.TRANSACTIONS, changes_from=old.date, data_through=day)
        Transaction.objects.filter(pk=old.pk).update(principal=old.principal + 100, batch=fix)
        # Edits by hand in the admin (the audit log records them): a disbursed principal and an
        # installment's due date; and a customer's segment refreshed.
        # Loans nothing else touches: no payment this month, nothing falling due these days.
        quiet = (
            Loan.objects.filter(pk__in=LoanState.objects.filter(run=run).values("loan_id"))
            .exclude(transactions__date__gte=BASE.replace(day=1))
            .exclude(installments__due_date__range=(BASE, day))
            .order_by("pk")
            .distinct()
        )
        edited = quiet[0]
        edited.disburse_principal += 250
        edited.save()
        late = LoanState.objects.filter(
            run=run, written_off=False, dpd__gt=0, loan__in=quiet.exclude(pk=edited.pk)
        ).first()
        # Its oldest unpaid installment forgiven: DPD runs from a later one, or stops.
        moved = Installment.objects.get(
            loan_id=late.loan_id, due_date=run.as_of - timedelta(days=late.dpd)
        )
        moved.principal = 0
        moved.save()
        segmented = LoanState.objects.filter(run=run).first().customer_id
        Customer.objects.filter(pk=segmented).update(segment="recovered")
        run = self.assertCarriedEqualsFull(day)
        self.assertGreaterEqual(run.touched_loans, 3)

        # A week on to the month-end (vintages, rates and roll rates against the month before),
        # then into the next month, where the month's collections start again.
        run = self.assertCarriedEqualsFull(date(2025, 11, 30))
        self.assertEqual(run.carried_from.as_of, day)
        self.assertTrue(VintagePoint.objects.filter(run=run).exists())
        self.assertTrue(RollRate.objects.filter(run=run).exists())
        self.assertCarriedEqualsFull(date(2025, 12, 1))

    def test_the_month_s_payers_are_read_from_the_openings_a_daily_run_kept(self):
        snapshot_compute(as_of=date(2025, 10, 31), job="test", carry=False)
        full = snapshot_compute(as_of=BASE, job="test", carry=False)
        self.assertFalse(full.opening_kept)  # no day before: not a daily run
        # The first daily run after it recomputes every payer of the month and keeps their
        # openings; the next one recomputes only the day's.
        first = self.assertCarriedEqualsFull(BASE + timedelta(days=1))
        self.assertTrue(first.opening_kept)
        month = BASE.replace(day=1)
        payers = set(
            Transaction.objects.filter(
                transaction_type="PAYMENT", date__range=(month, first.as_of)
            ).values_list("loan_id", flat=True)
        )
        self.assertEqual(
            set(MonthOpening.objects.filter(month=month).values_list("loan_id", flat=True)),
            payers,
        )
        self.assertGreaterEqual(first.touched_loans, len(payers))
        second = self.assertCarriedEqualsFull(BASE + timedelta(days=2))
        self.assertLess(second.touched_loans, len(payers))

        # A correction of a payer's history before the month (a payment of last month a
        # million bigger: its month's payments are collected in advance now), read by a run
        # computed in full: that run kept no openings, so the next day's run does not trust
        # the ones kept before the correction, and recomputes every payer again.
        payer = (
            Transaction.objects.filter(transaction_type="PAYMENT", date__range=(month, BASE))
            .exclude(loan__transactions__date__gt=BASE)
            .order_by("loan_id")
            .values_list("loan_id", flat=True)
            .first()
        )
        fix = batch_create(kind=Batch.Kind.TRANSACTIONS, changes_from=month, data_through=BASE)
        transaction_create(
            loan=Loan.objects.get(pk=payer),
            date=month - timedelta(days=3),
            batch=fix,
            principal=Decimal("1000000"),
        )
        day = BASE + timedelta(days=3)
        self.assertFalse(snapshot_compute(as_of=day, job="test", carry=False).opening_kept)
        kept = MonthOpening.objects.get(month=month, loan_id=payer)
        carried = self.assertCarriedEqualsFull(day + timedelta(days=1))
        self.assertGreaterEqual(carried.touched_loans, len(payers))
        # Recomputed, its opening is kept anew.
        self.assertEqual(
            MonthOpening.objects.get(month=month, loan_id=payer).paid_before_month,
            kept.paid_before_month + Decimal("1000000"),
        )

    def test_the_openings_of_months_before_the_last_two_are_dropped_with_their_claim(self):
        snapshot_compute(as_of=BASE, job="test", carry=False)
        november = snapshot_compute(as_of=BASE + timedelta(days=1), job="test")
        self.assertTrue(november.opening_kept)
        self.assertTrue(MonthOpening.objects.filter(month=BASE.replace(day=1)).exists())
        # January keeps November's (two months before); February's first daily run drops them.
        for month in (date(2026, 1, 1), date(2026, 2, 1)):
            snapshot_compute(as_of=month, job="test", carry=False)
            snapshot_compute(as_of=month + timedelta(days=1), job="test")
            dropped = month == date(2026, 2, 1)
            self.assertEqual(
                MonthOpening.objects.filter(month=BASE.replace(day=1)).exists(), not dropped
            )
            november.refresh_from_db()
            self.assertEqual(november.opening_kept, not dropped)

    def test_a_correction_loaded_through_the_import_is_recomputed(self):
        import tempfile
        from pathlib import Path

        tmp = Path(tempfile.mkdtemp(prefix="carry-"))
        tape = tape_valid(8)
        first = tmp / "first"
        first.mkdir()
        tape_write(first, **tape)
        tape_import(path=str(first), source="cascade", job="test", data_through=BASE)
        snapshot_compute(as_of=BASE, job="test", carry=False)
        corrected = {kind: [dict(row) for row in rows] for kind, rows in tape.items()}
        payment = next(t for t in corrected["transactions"] if t["transaction_type"] == "PAYMENT")
        payment["principal"] = Decimal(payment["principal"]) - Decimal("300.00")
        again = tmp / "again"
        again.mkdir()
        # ... and a loan's rate and disbursed principal (a steward reviews that one).
        loan = corrected["loans"][3]
        loan.update(
            interest_rate="0.31", disburse_principal=Decimal(loan["disburse_principal"]) + 100
        )
        tape_write(again, **corrected)
        tape_import(path=str(again), source="cascade", job="test", data_through=BASE)
        self.assertCarriedEqualsFull(BASE + timedelta(days=1))
        # The next day's export: only the tape's own view of each loan changed (DPD, balance,
        # status): nothing the snapshots read, so no loan is recomputed for it.
        daily = {kind: [dict(row) for row in rows] for kind, rows in corrected.items()}
        for row in daily["loans"]:
            row.update(dpd="3", outstanding_balance="10.00", loan_status="Late")
        later = tmp / "later"
        later.mkdir()
        tape_write(later, **daily)
        tape_import(path=str(later), source="cascade", job="test", data_through=BASE)
        self.assertIsNone(Batch.objects.filter(kind="loans").latest("created_at").changes_from)
        day = BASE + timedelta(days=2)
        carried = self.assertCarriedEqualsFull(day)
        since = day - timedelta(days=1)
        touched_by_date = (
            set(
                Transaction.objects.filter(date__gt=since, date__lte=day).values_list(
                    "loan_id", flat=True
                )
            )
            | set(
                Installment.objects.filter(due_date__gte=since, due_date__lt=day).values_list(
                    "loan_id", flat=True
                )
            )
            | set(
                Loan.objects.filter(disburse_date__gt=since, disburse_date__lte=day).values_list(
                    "pk", flat=True
                )
            )
        )
        self.assertEqual(carried.touched_loans, len(touched_by_date))

    def test_a_date_with_nothing_to_carry_from_is_computed_in_full(self):
        first = snapshot_compute(as_of=BASE, job="test")
        self.assertIsNone(first.carried_from)  # no run before it
        # Too far back (KPI_CARRY_DAYS): in full.
        self.assertIsNone(snapshot_compute(as_of=BASE + timedelta(days=8), job="test").carried_from)
        with override_settings(KPI_CARRY_DAYS=0):
            self.assertIsNone(
                snapshot_compute(as_of=BASE + timedelta(days=9), job="test").carried_from
            )
        # Another write-off threshold: states computed under the old one are not carried.
        with override_settings(WRITE_OFF_DPD=120):
            self.assertIsNone(
                snapshot_compute(as_of=BASE + timedelta(days=10), job="test").carried_from
            )
        carried = snapshot_compute(as_of=BASE + timedelta(days=11), job="test")
        self.assertIsNone(carried.carried_from)  # its base had the other write-off threshold
        self.assertIsNotNone(
            snapshot_compute(as_of=BASE + timedelta(days=12), job="test").carried_from
        )
        # Most of its loans touched: faster in full.
        with override_settings(KPI_CARRY_MAX_TOUCHED=0.01):
            self.assertIsNone(
                snapshot_compute(as_of=BASE + timedelta(days=14), job="test").carried_from
            )
        # The command says what it carried; --full computes every loan.
        out = StringIO()
        call_command("compute_kpis", "--as-of", str(BASE + timedelta(days=15)), stdout=out)
        self.assertIn(f"carried from {BASE + timedelta(days=14)}", out.getvalue())
        out = StringIO()
        call_command(
            "compute_kpis", "--as-of", str(BASE + timedelta(days=16)), "--full", stdout=out
        )
        self.assertIn("(every loan computed from the book)", out.getvalue())
        # The same date again, carried: the same numbers, so the stored run stands, and says so.
        out = StringIO()
        call_command("compute_kpis", "--as-of", str(BASE + timedelta(days=16)), stdout=out)
        self.assertIn(
            "(every loan computed from the book); recomputed, numbers unchanged", out.getvalue()
        )
        self.assertIsNone(SnapshotRun.objects.get(as_of=BASE + timedelta(days=16)).carried_from)
        # A batch the base read was removed (the demo data): in full.
        with time_machine.travel(datetime(2025, 12, 1, 9, 0, tzinfo=MADRID)):
            call_command("demo_data", "--remove", stdout=StringIO())
        self.assertIsNone(
            snapshot_compute(as_of=BASE + timedelta(days=13), job="test").carried_from
        )

    def test_kpi_daily_carries_yesterday_forward_and_says_so(self):
        snapshot_compute(as_of=BASE, job="test")
        with time_machine.travel(
            datetime.combine(BASE + timedelta(days=2), datetime.min.time(), MADRID)
        ):
            daily = pipeline_run(name="kpi_daily", trigger=PipelineRun.Trigger.COMMAND)
        self.assertEqual(daily.status, "succeeded", daily.error)
        yesterday = SnapshotRun.objects.get(as_of=BASE + timedelta(days=1))
        self.assertEqual(yesterday.carried_from.as_of, BASE)
        self.assertIn(
            f"{yesterday.as_of}: As reported, {yesterday.loans:,} loans (carried from {BASE}, "
            f"{yesterday.touched_loans:,} loans recomputed from the book)",
            daily.steps.get(name="snapshots").log,
        )

    def test_a_carried_run_whose_base_is_gone_still_says_it_was_carried(self):
        base = snapshot_compute(as_of=BASE, job="test")
        carried = snapshot_compute(as_of=BASE + timedelta(days=1), job="test")
        self.assertTrue(carried.computation.startswith(f"carried from {BASE}, "))
        with connection.cursor() as cursor:
            run_delete(cursor, base)
        carried.refresh_from_db()
        self.assertIsNone(carried.carried_from)
        self.assertEqual(
            carried.computation,
            f"carried from a run since recomputed, {carried.touched_loans:,} loans recomputed "
            "from the book",
        )


@pytest.mark.django_db(transaction=True)  # the second connection sees committed rows only
@override_settings(KPI_CARRY_MAX_TOUCHED=float("inf"))
def test_a_daily_run_s_work_aside_equals_a_computation_on_one_connection():
    """Outside a transaction, a carried run computes the month's flows per loan on its second
    connection, which sees the committed openings but not the run's own temporary tables; at a
    month-end, the earlier month-ends' ever-30+ loans are read there too. Each date equals a
    full computation made inside a transaction, on one connection."""
    with time_machine.travel(datetime(2025, 12, 1, 9, 0, tzinfo=MADRID)):
        call_command(
            "demo_data", "--loans", "300", "--customers", "60", "--seed", "5", stdout=StringIO()
        )
    assert not connection.in_atomic_block
    month_ends = [date(2025, 7, 31), date(2025, 8, 31), date(2025, 9, 30), date(2025, 10, 31)]
    for month_end in month_ends:
        snapshot_compute(as_of=month_end, job="test", carry=False)
    snapshot_compute(as_of=BASE, job="test", carry=False)
    # Vintages need the earlier month-ends: loans at 30+ DPD then and no longer at the end.
    earlier = set(
        LoanState.objects.filter(run__as_of__in=month_ends, dpd__gte=30).values_list(
            "loan_id", flat=True
        )
    )
    ending = LoanState.objects.filter(run__as_of=BASE, dpd__gte=30).values_list(
        "loan_id", flat=True
    )
    assert earlier - set(ending)
    # The chain's first daily run (every payer recomputed), then one reading the openings kept,
    # then the month-end.
    for as_of in (BASE + timedelta(days=1), BASE + timedelta(days=3), date(2025, 11, 30)):
        with transaction.atomic():
            full = snapshot_compute(as_of=as_of, job="test", carry=False)
            expected = stored(full)
            with connection.cursor() as cursor:
                run_delete(cursor, full)
        carried = snapshot_compute(as_of=as_of, job="test")
        assert carried.carried_from is not None
        assert carried.opening_kept
        got = stored(carried)
        for part, rows in expected.items():
            assert got[part] == rows, f"{as_of}: {part} differ"
    assert VintagePoint.objects.filter(run=carried, ever_30__gt=0).exists()
    assert carried.touched_loans < MonthOpening.objects.filter(month=BASE.replace(day=1)).count()
