"""AI insights (issue 23): the digest, the verifier, the deterministic summary on the golden set,
the model behind a fake OpenAI server over real HTTP, the kpi_daily step and the pages."""

from __future__ import annotations

import json
import time
from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import F
from django.test import override_settings
from django.urls import reverse

from compliance import classification
from compliance.models import FieldClassification, JournalEntry
from integrations.models import PipelineRun
from integrations.pipelines import pipeline_run
from kpis.engine import snapshot_compute
from kpis.insights.digest import digest_build, digest_sources_check
from kpis.insights.services import Budget, insight_generate, insights_for_run
from kpis.insights.summary import summary_write
from kpis.insights.verify import WRONG_DIRECTION, WRONG_NUMBER, answer_verify
from kpis.models import Insight, SnapshotRun
from loans.models import Batch, Loan
from tests.base import CastTestCase
from tests.integrations.fakes import openai as fake
from tests.integrations.fakes.server import serve
from tests.kpis.insight_books import (
    GOLDEN,
    collections_drop_book,
    concentration_jump_book,
    par30_crossing_book,
)

APIS = ("responses", "chat")


def model_on(url: str, **extra):
    """Settings that point the real client at the fake server."""
    return override_settings(
        OPENAI_ENABLED=True,
        OPENAI_API_KEY=fake.KEY,
        OPENAI_BASE_URL=f"{url}/v1",
        OPENAI_MAX_RETRIES=extra.pop("retries", 2),
        **extra,
    )


def facts_stated(answer: dict, golden) -> list[str]:
    """The golden facts ``answer`` does not state (empty when it states them all)."""
    parts = [answer["headline"], *answer["statements"]]
    missing = []
    for kpi, slice_, direction, crossing in golden.facts:
        found = [
            p
            for p in parts
            if p["kpi"] == kpi
            and p["slice"] == slice_
            and p["direction"] == direction
            and p["date"] == golden.after.isoformat()
            and p["compared_to"] == golden.before.isoformat()
            and crossing in p["text"]
        ]
        if not found:
            missing.append(f"{kpi} {slice_} {direction} {crossing}")
    return missing


@pytest.mark.django_db
@pytest.mark.parametrize("build", GOLDEN, ids=lambda b: b.__name__)
def test_the_summary_states_every_expected_fact_of_the_golden_set(build):
    golden = build()
    _, after = golden.compute()
    digest = digest_build(run=after)
    answer = summary_write(digest)
    assert facts_stated(answer, golden) == []
    # The summary passes the verifier it shares with the model: nothing of it is dropped.
    verified = answer_verify(answer, digest.facts)
    assert verified.failed == []
    # Threshold crossings come first: the headline is one (here with a PAR30 crossing beside the
    # collections drop, as on the tape in 2024-09).
    crossings = {(c["kpi"], c["slice"]) for c in digest.data["crossings"]}
    assert (answer["headline"]["kpi"], answer["headline"]["slice"]) in crossings


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("build", "kpi", "values"),
    [
        (par30_crossing_book, "par_30", {"2025-06-30": "3.63", "2025-07-31": "5.84"}),
        (concentration_jump_book, "top_1_share", {"2025-07-31": "8.60", "2025-08-31": "10.55"}),
        (collections_drop_book, "collection_rate", {"2024-08-31": "93.46", "2024-09-30": "59.58"}),
    ],
    ids=["par30", "concentration", "collections"],
)
def test_the_golden_books_reproduce_the_real_month_ends_figures(build, kpi, values):
    """The books give the tape's figures at its dates, to the displayed precision."""
    _, after = build().compute()
    series = digest_build(run=after).data["series"]
    found = next(s for s in series if s["kpi"] == kpi and s["slice"] == "portfolio")
    assert found["values"] == values


@pytest.mark.django_db
def test_a_new_dates_changes_are_against_the_month_end_as_it_now_stands():
    """A new date's first run is as reported, but the month-end before it was restated (a real
    tape loaded after the demo data, a late correction): the change is against the restated
    numbers, as the overview's cards show it, never against numbers that no longer stand."""
    golden = par30_crossing_book()
    snapshot_compute(as_of=golden.before)
    # A late correction: H1 was lent 10,000 more, from the start.
    Loan.objects.filter(loan_id="H1").update(disburse_principal=F("disburse_principal") + 10000)
    assert snapshot_compute(as_of=golden.before).basis == SnapshotRun.Basis.RESTATED
    after = snapshot_compute(as_of=golden.after)
    assert after.basis == SnapshotRun.Basis.AS_REPORTED  # the date's first run
    series = digest_build(run=after).data["series"]
    found = next(
        s for s in series if s["kpi"] == "outstanding_principal" and s["slice"] == "portfolio"
    )
    assert found["values"] == {"2025-06-30": "110000", "2025-07-31": "110000"}
    # The as-reported view of a restated date still compares as reported.
    reported = SnapshotRun.objects.of_date(golden.before).get(basis="as_reported")
    series = digest_build(run=reported).data["series"]
    found = next(
        s for s in series if s["kpi"] == "outstanding_principal" and s["slice"] == "portfolio"
    )
    assert found["values"]["2025-06-30"] == "100000"


@pytest.mark.django_db
def test_a_snapshot_beyond_the_data_says_so_in_the_digest_and_the_summary():
    golden = par30_crossing_book()
    _, after = golden.compute()
    # The tape's cut-off is 2025-07-15: the snapshot of 07-31 counts no payment after it.
    Batch.objects.update(data_through=date(2025, 7, 15))
    digest = digest_build(run=after)
    status = digest.data["data_status"]
    assert (status["data_through"], status["beyond_data"]) == ("2025-07-15", True)
    assert status["beyond_data_reason"].startswith(
        "the snapshot of 2025-07-31 is dated after the book's data ends (2025-07-15)"
    )
    with override_settings(OPENAI_ENABLED=False):
        insight = insight_generate(run=after, job="test")
    # The crossing stays the headline; the very next sentence says what the figures are.
    assert insight.headline.startswith("Portfolio at risk 30+ of the whole portfolio crossed")
    assert insight.statements[0]["text"] == (
        "The snapshot of 2025-07-31 is dated after the book's data ends (2025-07-15): it counts "
        "no payment after that date, so Outstanding principal of the whole portfolio at "
        "100,000 is a projection of unpaid schedules, not the book."
    )
    assert insight.verification == Insight.Verification.PASSED
    # Within the data: no flag, no reason, no such sentence.
    Batch.objects.update(data_through=date(2025, 7, 31))
    digest = digest_build(run=after)
    status = digest.data["data_status"]
    assert (status["data_through"], status["beyond_data"]) == ("2025-07-31", False)
    assert status["beyond_data_reason"] == ""
    answer = summary_write(digest)
    assert not [s for s in answer["statements"] if "data ends" in s["text"]]
    # Provisional alone: the summary says so, and that its figures may still move.
    after.provisional = True
    after.save()
    answer = summary_write(digest_build(run=after))
    assert answer["statements"][0]["text"].startswith(
        "The snapshot of {date} is provisional (its reasons are listed with it)"
    )


@pytest.mark.django_db
def test_a_partial_month_rate_reaches_the_digest_as_not_meaningful_never_as_a_number():
    golden = par30_crossing_book()
    _, after = golden.compute()
    mid = snapshot_compute(as_of=date(2025, 7, 20))
    digest = digest_build(run=mid)
    not_meaningful = {(n["kpi"], n["slice"], n["date"]): n for n in digest.data["not_meaningful"]}
    cdr = not_meaningful[("cdr", "portfolio", "2025-07-20")]
    assert (cdr["value"], cdr["reason"]) == (
        "n/m",
        "annualised from a partial month (20 days to 2025-07-20)",
    )
    assert ("roll_rates", "portfolio", "2025-07-20") in not_meaningful
    # No fact to cite: a statement on it fails, and no roll-rate series is offered.
    assert digest.facts.get("cdr", "portfolio", "2025-07-20") is None
    assert not [code for code, _, _ in digest.facts.values if code.startswith("roll_")]
    assert "cdr" not in {s["kpi"] for s in digest.data["series"]}
    # A month-end's CDR covers its whole month: a fact like any other.
    month_end = digest_build(run=after)
    assert month_end.data["not_meaningful"] == []
    assert month_end.facts.get("cdr", "portfolio", "2025-07-31") is not None


@pytest.mark.django_db
def test_month_to_date_figures_of_a_partial_month_are_not_compared_with_a_whole_month():
    """2024-09-25: September's collections so far against August's whole month would read as a
    fall (or a rise) that is only the calendar; the summary states the value, the digest says
    why there is no comparison, and at the month-end the comparison is back."""
    golden = collections_drop_book()
    golden.compute()
    mid = snapshot_compute(as_of=date(2024, 9, 25))
    digest = digest_build(run=mid)
    partial = digest.data["partial_month"]
    assert partial["days"] == 25
    assert {"collection_rate", "disbursements", "disbursement_count"} <= set(partial["kpis"])
    assert digest.facts.get("collection_rate", "portfolio", "2024-08-31") is None
    assert digest.facts.get("collection_rate", "portfolio", "2024-09-25") == Decimal("0.5958")
    assert not [c for c in digest.data["crossings"] if c["kpi"] in partial["kpis"]]
    statements = summary_write(digest)["statements"]
    rate = next(s for s in statements if s["kpi"] == "collection_rate")
    assert (rate["direction"], rate["compared_to"]) == ("none", None)
    # Stock figures still compare with the month-end.
    assert ("outstanding_principal", "portfolio", "2024-08-31") in {
        (s["kpi"], s["slice"], s["compared_to"]) for s in statements
    }
    # At the month-end the month is whole: compared, and the crossing is reported.
    month_end = digest_build(run=snapshot_compute(as_of=date(2024, 9, 30)))
    assert month_end.data["partial_month"] is None
    assert "collection_rate" in {c["kpi"] for c in month_end.data["crossings"]}


@pytest.mark.django_db
def test_writing_and_regenerating_an_insight_is_journaled(django_capture_on_commit_callbacks):
    _, after = par30_crossing_book().compute()
    with django_capture_on_commit_callbacks(execute=True), override_settings(OPENAI_ENABLED=False):
        first = insight_generate(run=after, job="kpi_daily")
        second = insight_generate(run=after, dimension="company", member="Abaco Financial")
        third = insight_generate(run=after, job="write_insights")
    entries = list(JournalEntry.objects.filter(kind=JournalEntry.Kind.INSIGHT).order_by("id"))
    assert [(e.action, e.object, e.actor) for e in entries] == [
        ("insight written", f"kpis.insight:{first.pk}", ""),
        ("insight written", f"kpis.insight:{second.pk}", ""),
        ("insight regenerated", f"kpis.insight:{third.pk}", ""),
    ]
    body = json.loads(entries[0].body)
    assert {k: body[k] for k in ("job", "run", "as_of", "slice", "source", "verification")} == {
        "job": "kpi_daily",
        "run": f"kpis.snapshotrun:{after.pk}",
        "as_of": "2025-07-31",
        "slice": "portfolio",
        "source": "summary",
        "verification": "passed",
    }
    assert body["checks"] == {"passed": len(first.checks), "failed": 0}
    assert body["prompt_hash"] == first.prompt_hash
    assert json.loads(entries[1].body)["slice"] == "company:Abaco Financial"
    # An insight rolled back with its transaction leaves no entry.
    with (
        django_capture_on_commit_callbacks(execute=True),
        override_settings(OPENAI_ENABLED=False),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        insight_generate(run=after, job="test")
        raise RuntimeError("the step failed")
    assert JournalEntry.objects.filter(kind=JournalEntry.Kind.INSIGHT).count() == 3


@pytest.mark.django_db
def test_the_digest_refuses_a_source_the_registry_marks_personal():
    digest_sources_check()
    FieldClassification.objects.update_or_create(
        model="kpis.KpiValue", field="member", defaults={"personal": True, "masking": "none"}
    )
    classification.refresh()
    try:
        with pytest.raises(
            RuntimeError, match=r"a digest may not read personal data: kpis\.KpiValue"
        ):
            digest_sources_check()
    finally:
        FieldClassification.objects.filter(model="kpis.KpiValue", field="member").update(
            personal=False
        )
        classification.refresh()


@pytest.mark.django_db
def test_the_published_text_prints_the_stored_values_never_the_models_digits():
    golden = par30_crossing_book()
    _, after = golden.compute()
    digest = digest_build(run=after)
    answer = fake.faithful_answer(json.loads(digest.text()))
    with serve(fake.FakeOpenAI()) as url, model_on(url):
        insight = insight_generate(run=after, job="test")
    assert insight.source == Insight.Source.MODEL
    assert insight.verification == Insight.Verification.PASSED
    # PAR30 is the first crossing: the headline names it with the stored figures as displayed.
    assert answer["headline"]["kpi"] == "par_30"
    assert "5.84%" in insight.headline and "3.63%" in insight.headline
    assert "+2.21 pp" in insight.headline
    assert "{" not in insight.headline
    # A statement that writes its own figure is refused: figures only come from placeholders.
    tampered = dict(answer["headline"], text="PAR30 rose to 5.84% this month.")
    assert answer_verify({"headline": tampered, "statements": []}, digest.facts).failed[0].reason


# The model behind the fake server ---------------------------------------------------------------


def planted_caught(insight: Insight, planted: dict, reason: str) -> bool:
    """A failing check of ``reason`` names the planted statement, and nothing published cites it."""
    caught = [
        c
        for c in insight.checks
        if not c["ok"]
        and c["reason"] == reason
        and c["kpi"] == planted["kpi"]
        and c["slice"] == planted["slice"]
        and c["direction"] == planted["direction"]
    ]
    published = [
        s
        for s in insight.statements
        if (s["kpi"], s["slice"], s["direction"])
        == (planted["kpi"], planted["slice"], planted["direction"])
    ]
    return bool(caught) and not (reason == WRONG_DIRECTION and published)


@pytest.mark.django_db
@pytest.mark.parametrize("build", GOLDEN, ids=lambda b: b.__name__)
def test_the_verifier_catches_every_planted_wrong_number_and_direction(build):
    _, after = build().compute()
    for api in APIS:
        for plant, reason in (
            (fake.wrong_number, WRONG_NUMBER),
            (fake.wrong_direction, WRONG_DIRECTION),
        ):
            # In a statement: that statement is dropped, the rest is published.
            server = fake.FakeOpenAI(script=[plant("statement")])
            with serve(server) as url, model_on(url, OPENAI_API=api):
                insight = insight_generate(run=after, job="test")
            assert insight.source == Insight.Source.MODEL, (api, plant.__name__)
            assert insight.verification == Insight.Verification.PARTIAL
            assert planted_caught(insight, server.planted[0], reason), (api, plant.__name__)
            assert len(insight.statements) == len([c for c in insight.checks if c["ok"]]) - 1
            # In the headline: the answer is asked for again, and the second one stands.
            server = fake.FakeOpenAI(script=[plant("headline"), fake.faithful()])
            with serve(server) as url, model_on(url, OPENAI_API=api):
                insight = insight_generate(run=after, job="test")
            assert insight.source == Insight.Source.MODEL
            assert insight.attempts == 2
            assert planted_caught(insight, server.planted[0], reason)
            assert [c["attempt"] for c in insight.checks if not c["ok"]] == [1]


@pytest.mark.django_db
def test_a_headline_that_keeps_failing_is_replaced_by_the_summary_after_the_bounded_attempts():
    _, after = par30_crossing_book().compute()
    server = fake.FakeOpenAI(script=[fake.wrong_direction("headline")] * 3)
    with serve(server) as url, model_on(url, INSIGHT_MAX_ATTEMPTS=2):
        insight = insight_generate(run=after, job="test")
    assert len(server.requests) == 2
    assert insight.source == Insight.Source.SUMMARY
    assert insight.attempts == 2
    assert (
        "headline failed its check (wrong direction) after 2 answer(s)" in insight.fallback_reason
    )
    # What the model cost is kept even though its text was not used.
    assert insight.input_tokens > 0 and insight.output_tokens > 0 and insight.cost > 0
    assert insight.headline.startswith("Portfolio at risk 30+ of the whole portfolio crossed")


@pytest.mark.django_db
@pytest.mark.parametrize("api", APIS)
def test_malformed_json_and_a_refusal_are_asked_again_then_the_summary_stands_in(api):
    _, after = par30_crossing_book().compute()
    server = fake.FakeOpenAI(script=[fake.malformed(), fake.faithful()])
    with serve(server) as url, model_on(url, OPENAI_API=api):
        insight = insight_generate(run=after, job="test")
    assert insight.source == Insight.Source.MODEL
    assert insight.attempts == 2
    assert insight.checks[0] == {
        "attempt": 1,
        "part": "answer",
        "ok": False,
        "reason": "the answer is not valid JSON",
    }
    server = fake.FakeOpenAI(script=[fake.refusal(), fake.refusal()])
    with serve(server) as url, model_on(url, OPENAI_API=api):
        insight = insight_generate(run=after, job="test")
    assert insight.source == Insight.Source.SUMMARY
    assert insight.fallback_reason.startswith("refused: I'm sorry")
    assert insight.api == api


@pytest.mark.django_db
@pytest.mark.parametrize("api", APIS)
def test_it_waits_as_told_on_429_and_retries_5xx_then_answers(api):
    _, after = par30_crossing_book().compute()
    server = fake.FakeOpenAI(script=[fake.error(429, retry_after="1"), fake.error(503)])
    with serve(server) as url, model_on(url, OPENAI_API=api, retries=2):
        insight = insight_generate(run=after, job="test")
    statuses = [status for _, status, _ in server.served]
    assert statuses == [429, 503, 200]
    assert server.served[1][2] - server.served[0][2] >= 1.0  # Retry-After: 1
    assert insight.source == Insight.Source.MODEL
    assert insight.model == fake.MODEL


@pytest.mark.django_db
def test_5xx_until_retries_run_out_and_a_timeout_fall_back_without_the_key_anywhere():
    _, after = par30_crossing_book().compute()
    server = fake.FakeOpenAI(script=[fake.error(500)] * 2)
    with serve(server) as url, model_on(url, retries=1):
        insight = insight_generate(run=after, job="test")
    assert len(server.requests) == 2
    assert insight.source == Insight.Source.SUMMARY
    assert "answered 500" in insight.fallback_reason
    server = fake.FakeOpenAI(script=[fake.slow(1.5)])
    with serve(server) as url, model_on(url, retries=0, OPENAI_TIMEOUT=0.3):
        started = time.perf_counter()
        insight = insight_generate(run=after, job="test")
        assert time.perf_counter() - started < 1.4
    assert insight.source == Insight.Source.SUMMARY
    assert "timed out" in insight.fallback_reason
    for stored in Insight.objects.all():
        assert fake.KEY not in json.dumps([stored.fallback_reason, stored.checks])


@pytest.mark.django_db
def test_it_is_off_until_enabled_with_a_key_and_stops_at_the_runs_token_limit():
    _, after = par30_crossing_book().compute()
    server = fake.FakeOpenAI()
    with serve(server) as url, model_on(url), override_settings(OPENAI_ENABLED=False):
        off = insights_for_run(run=after, job="test")
    assert server.requests == []
    assert {i.source for i in off} == {Insight.Source.SUMMARY}
    assert off[0].fallback_reason == "the model is off (OPENAI_ENABLED and OPENAI_API_KEY)"
    with serve(server) as url, model_on(url, OPENAI_RUN_TOKEN_LIMIT=10):
        limited = insights_for_run(run=after, job="test", budget=Budget.per_run())
    # The first request starts under the limit and spends past it; no other request starts.
    assert len(server.requests) == 1
    assert [i.source for i in limited] == [Insight.Source.MODEL] + [Insight.Source.SUMMARY] * 2
    assert limited[1].fallback_reason == "the run's token limit (10) is reached"
    assert [(i.dimension, i.member) for i in limited] == [
        ("portfolio", ""),
        ("company", "Abaco Financial"),
        ("company", "Abaco Technologies"),
    ]
    with serve(server) as url, model_on(url, OPENAI_RUN_COST_LIMIT=Decimal("0")):
        free = insight_generate(run=after, job="test")
    assert len(server.requests) == 1  # none more
    assert free.fallback_reason == "the run's cost limit (USD 0) is reached"


@pytest.mark.django_db
def test_no_customer_name_national_id_or_email_reaches_the_model():
    golden = par30_crossing_book()
    for customer in golden.book.customers.values():
        customer.name = f"María {customer.customer_id} Pérez"
        customer.national_id = f"0614-150385-{customer.customer_id}"
        customer.email = f"{customer.customer_id.lower()}@cliente.example"
        customer.save()
    _, after = golden.compute()
    server = fake.FakeOpenAI()
    with serve(server) as url:
        for api in APIS:
            with model_on(url, OPENAI_API=api):
                insights_for_run(run=after, job="test")
    assert len(server.bodies) == 6  # portfolio and two entities, on each API
    personal = [
        value for c in golden.book.customers.values() for value in (c.name, c.national_id, c.email)
    ]
    for body in server.bodies:
        text = json.dumps(json.loads(body))  # escapes decoded the same way for every body
        assert [value for value in personal if value in text or value in body.decode()] == []
        assert "Pérez" not in body.decode() and "cliente.example" not in text


@pytest.mark.django_db
def test_kpi_daily_writes_insights_for_the_portfolio_and_each_entity_and_never_fails_for_them():
    par30_crossing_book()
    # The tape was exported on 2025-07-31 (its cut-off): nothing was repaid up to then.
    Batch.objects.update(data_through=date(2025, 7, 31))
    server = fake.FakeOpenAI()
    with serve(server) as url, model_on(url):
        run = pipeline_run(name="kpi_daily", for_date=date(2025, 7, 31), trigger="command")
    assert run.status == PipelineRun.Status.SUCCEEDED
    step = run.steps.get(name="insights")
    assert step.status == PipelineRun.Status.SUCCEEDED
    assert step.rows_out == 3
    insights = Insight.objects.filter(job="kpi_daily")
    assert {(i.run.as_of, i.member, i.source) for i in insights} == {
        (date(2025, 7, 31), member, Insight.Source.MODEL)
        for member in ("", "Abaco Financial", "Abaco Technologies")
    }
    assert "2025-07-31 portfolio: AI-written, every statement passed its checks" in step.log
    # A broken insights setup fails the step, not the job: the snapshots stand.
    Insight.objects.all().delete()
    with serve(server) as url, model_on(url, OPENAI_PRICE_INPUT="not a price"):
        run = pipeline_run(name="kpi_daily", for_date=date(2025, 8, 1), trigger="command")
    assert run.status == PipelineRun.Status.SUCCEEDED
    assert run.steps.get(name="snapshots").status == PipelineRun.Status.SUCCEEDED
    failed = run.steps.get(name="insights")
    assert failed.status == PipelineRun.Status.FAILED
    assert "TypeError" in failed.error
    assert not Insight.objects.exists()


# The pages ----------------------------------------------------------------------------------


class InsightPageTests(CastTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        golden = par30_crossing_book()
        cls.before, cls.after = golden.compute()
        cls.server = fake.FakeOpenAI()
        with serve(cls.server) as url, model_on(url):
            cls.insight = insight_generate(run=cls.after, job="kpi_daily")

    def test_the_overview_shows_the_checked_insight_with_its_provenance(self):
        self.client.force_login(self.manager)
        page = self.client.get(reverse("kpis:overview")).content.decode()
        assert "AI-written, checked against the snapshot of 2025-07-31" in page
        assert self.insight.headline in page
        assert "5.84%" in page
        assert 'action="/dashboard/insights/regenerate/"' in page
        assert "<script>" not in page and "style=" not in page

    def test_the_summary_says_it_is_one_and_why(self):
        with override_settings(OPENAI_ENABLED=False):
            insight_generate(run=self.before, job="kpi_daily")
        self.client.force_login(self.auditor)
        response = self.client.get(reverse("kpis:overview"), {"as_of": "2025-06-30"})
        assert response.status_code == 403  # auditors read no dashboards
        self.client.force_login(self.manager)
        page = self.client.get(reverse("kpis:overview"), {"as_of": "2025-06-30"}).content.decode()
        assert "Deterministic summary of the snapshot of 2025-06-30 (the model is off" in page

    def test_a_provisional_snapshot_says_so_in_the_digest_and_beside_the_insight(self):
        self.after.provisional = True
        self.after.provisional_reasons = ["batch 7 failed: transactions.csv row 12"]
        self.after.save()
        digest = digest_build(run=self.after)
        assert digest.data["data_status"]["provisional"] is True
        assert digest.data["data_status"]["provisional_reasons"] == [
            "batch 7 failed: transactions.csv row 12"
        ]
        with override_settings(OPENAI_ENABLED=False):
            summary = insight_generate(run=self.after, job="kpi_daily")
        # The golden book's data ends 2025-04-15: provisional and beyond the data, both said.
        assert summary.statements[0]["text"].startswith(
            "The snapshot of 2025-07-31 is provisional and dated after the book's data ends "
            "(2025-04-15)"
        )
        self.client.force_login(self.manager)
        page = self.client.get(reverse("kpis:overview")).content.decode()
        assert (
            '<p class="insight-status"><span class="badge provisional">Provisional</span> batch 7'
            in page
        )

    def test_the_history_lists_every_insight_of_the_slice_with_its_checks_and_costs(self):
        self.client.force_login(self.manager)
        page = self.client.get(reverse("kpis:insights")).content.decode()
        assert f'id="insight-{self.insight.pk}"' in page
        assert f"{self.insight.input_tokens} in / {self.insight.output_tokens} out tokens" in page
        assert f"prompt v{self.insight.prompt_version}" in page
        self.client.force_login(self.uploader)  # staff read the dashboards, insights with them
        assert self.client.get(reverse("kpis:insights")).status_code == 200
        self.client.force_login(self.outsider)
        assert self.client.get(reverse("kpis:insights")).status_code == 403

    def test_a_manager_regenerates_an_insight_in_the_cluster_and_others_cannot(self):
        url = reverse("kpis:insight_regenerate")
        form = {"as_of": "2025-07-31", "dimension": "company", "member": "Abaco Financial"}
        self.client.force_login(self.manager)
        assert self.client.get(url).status_code == 405
        with (
            serve(self.server) as base,
            model_on(base),
            self.captureOnCommitCallbacks(execute=True),
        ):
            response = self.client.post(url, form)
        assert response.status_code == 302
        assert "dimension=company" in response["Location"]
        made = Insight.objects.get(job="regenerate")
        assert (made.member, made.requested_by, made.source) == (
            "Abaco Financial",
            self.manager,
            Insight.Source.MODEL,
        )
        entry = JournalEntry.objects.get(
            kind=JournalEntry.Kind.INSIGHT, object=f"kpis.insight:{made.pk}"
        )
        assert (entry.action, entry.actor_id, entry.actor) == (
            "insight written",  # the first of this slice (the setup wrote the portfolio's)
            self.manager.pk,
            self.manager.get_username(),
        )
        assert json.loads(entry.body)["model"] == fake.MODEL
        for user in (self.auditor, self.uploader, self.outsider):
            self.client.force_login(user)
            assert self.client.post(url, form).status_code == 403
        self.client.logout()
        assert self.client.post(url, form).status_code == 302  # to the login page
        assert Insight.objects.filter(job="regenerate").count() == 1


def test_the_digest_reads_no_model_with_restricted_fields():
    from compliance.classification import RESTRICTED_FIELDS
    from kpis.insights.digest import SOURCES

    assert not set(SOURCES) & set(RESTRICTED_FIELDS)
    assert "loans.Customer" in RESTRICTED_FIELDS  # the rule the digest keeps to


@pytest.mark.django_db
def test_write_insights_writes_a_runs_insights_now_and_names_a_missing_run():
    _, after = collections_drop_book().compute()
    out = StringIO()
    with override_settings(OPENAI_ENABLED=False):
        call_command("write_insights", "--as-of", "2024-09-30", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "2024-09-30 portfolio: Deterministic summary, every statement passed its checks (the "
        "model is off (OPENAI_ENABLED and OPENAI_API_KEY)); 0 in / 0 out tokens, USD 0.000000, 0 ms"
    )
    assert Insight.objects.filter(run=after, job="write_insights").count() == 3
    with pytest.raises(CommandError, match="no as_reported snapshot run at 2024-07-31"):
        call_command("write_insights", "--as-of", "2024-07-31", stdout=StringIO())
