"""Generate and store insights: ask the model, verify, regenerate a bounded number of times, fall
back to the deterministic summary, and keep what happened (``Insight``).

The model is reached by the dotted path ``WRITER`` (``integrations.openai.client``), resolved only
when ``OPENAI_ENABLED``: kpis and integrations never import each other, as ``kpi_daily`` reaches
kpis through the jobs registry. A writer takes ``system``, ``user``, ``schema`` and ``name`` and
returns an object with ``data``, ``problem``, ``model``, ``api``, ``input_tokens``,
``output_tokens`` and ``latency_ms`` (``integrations.openai.client.StructuredAnswer``), or raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils.module_loading import import_string

from compliance.journal import journal_append
from compliance.models import JournalEntry
from kpis.insights.digest import ENTITY, Digest, digest_build, slice_label
from kpis.insights.prompt import (
    PROMPT_VERSION,
    SCHEMA_NAME,
    SYSTEM,
    answer_schema,
    prompt_hash,
    user_message,
)
from kpis.insights.summary import summary_write
from kpis.insights.verify import Verified, answer_verify, statement_render
from kpis.models import Insight, KpiValue, SnapshotRun

logger = logging.getLogger(__name__)

WRITER = "integrations.openai.client.structured_answer"
MILLION = Decimal(1_000_000)


@dataclass
class Budget:
    """The tokens and cost one run of insights may spend (``OPENAI_RUN_*_LIMIT``): no request
    starts once either is reached."""

    tokens: int
    cost: Decimal
    tokens_used: int = 0
    cost_used: Decimal = Decimal(0)

    @classmethod
    def per_run(cls) -> Budget:
        return cls(tokens=settings.OPENAI_RUN_TOKEN_LIMIT, cost=settings.OPENAI_RUN_COST_LIMIT)

    def exhausted(self) -> str:
        if self.tokens_used >= self.tokens:
            return f"the run's token limit ({self.tokens:,}) is reached"
        if self.cost_used >= self.cost:
            return f"the run's cost limit (USD {self.cost}) is reached"
        return ""

    def spend(self, tokens_in: int, tokens_out: int) -> Decimal:
        cost = (
            Decimal(tokens_in) * settings.OPENAI_PRICE_INPUT
            + Decimal(tokens_out) * settings.OPENAI_PRICE_OUTPUT
        ) / MILLION
        self.tokens_used += tokens_in + tokens_out
        self.cost_used += cost
        return cost.quantize(Decimal("0.000001"))


@dataclass
class Attempts:
    """What asking the model cost and found, over every answer asked for one insight."""

    count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency_ms: int = 0
    model: str = ""
    api: str = ""


def _published(verified: Verified, digest: Digest) -> tuple[str, list[dict[str, Any]]]:
    assert verified.headline is not None
    statements = [
        {
            "text": statement_render(s, digest.facts),
            "kpi": s["kpi"],
            "slice": s["slice"],
            "date": s["date"],
            "compared_to": s.get("compared_to"),
            "direction": s["direction"],
        }
        for s in verified.statements
    ]
    return statement_render(verified.headline, digest.facts), statements


def _ask(
    digest: Digest, *, budget: Budget, writer: Callable[..., Any], spent: Attempts
) -> tuple[Verified | None, list[dict[str, Any]], str]:
    """Ask up to INSIGHT_MAX_ATTEMPTS times for an answer whose headline verifies."""
    checks: list[dict[str, Any]] = []
    reason = ""
    schema = answer_schema(digest)
    for attempt in range(1, settings.INSIGHT_MAX_ATTEMPTS + 1):
        if limit := budget.exhausted():
            return None, checks, limit
        spent.count = attempt
        try:
            answer = writer(
                system=SYSTEM, user=user_message(digest), schema=schema, name=SCHEMA_NAME
            )
        except Exception as exc:
            # The provider's errors (integrations.http.ProviderError) are free of secrets; the SDK
            # already retried what was worth retrying, so this insight falls back now.
            logger.warning("insight: no answer", extra={"run": digest.run.pk, "error": str(exc)})
            checks.append({"attempt": attempt, "part": "answer", "ok": False, "reason": str(exc)})
            return None, checks, f"no answer from the model: {exc}"
        spent.input_tokens += answer.input_tokens
        spent.output_tokens += answer.output_tokens
        spent.cost += budget.spend(answer.input_tokens, answer.output_tokens)
        spent.latency_ms += answer.latency_ms
        spent.model, spent.api = answer.model, answer.api
        if answer.data is None:
            reason = answer.problem
            checks.append({"attempt": attempt, "part": "answer", "ok": False, "reason": reason})
            continue
        verified = answer_verify(answer.data, digest.facts)
        checks += [{"attempt": attempt, **c.as_dict()} for c in verified.checks]
        if verified.headline is not None:
            return verified, checks, ""
        reason = f"the headline failed its check ({verified.checks[0].reason})"
    return None, checks, f"{reason} after {spent.count} answer(s)"


def insight_generate(
    *,
    run: SnapshotRun,
    dimension: str = "portfolio",
    member: str = "",
    job: str = "",
    by: User | None = None,
    budget: Budget | None = None,
    writer: Callable[..., Any] | None = None,
) -> Insight:
    """Write, check and store the insight of one slice at ``run``."""
    digest = digest_build(run=run, dimension=dimension, member=member)
    budget = budget or Budget.per_run()
    spent = Attempts()
    checks: list[dict[str, Any]] = []
    verified: Verified | None = None
    if not settings.OPENAI_ENABLED and writer is None:
        reason = "the model is off (OPENAI_ENABLED and OPENAI_API_KEY)"
    else:
        verified, checks, reason = _ask(
            digest, budget=budget, writer=writer or import_string(WRITER), spent=spent
        )
    source = Insight.Source.MODEL
    if verified is None:
        source = Insight.Source.SUMMARY
        verified = answer_verify(summary_write(digest), digest.facts)
        checks += [{"attempt": "summary", **c.as_dict()} for c in verified.checks]
    statements: list[dict[str, Any]] = []
    if verified.headline is None:  # a slice with no stored values at all
        headline = "No KPI values are stored for this slice at this date."
    else:
        headline, statements = _published(verified, digest)
    text = digest.text()
    earlier = Insight.objects.filter(run=run, dimension=dimension, member=member).exists()
    insight = Insight.objects.create(
        run=run,
        dimension=dimension,
        member=member,
        source=source,
        verification=Insight.Verification.PARTIAL
        if verified.failed
        else Insight.Verification.PASSED,
        fallback_reason=reason[:300] if source == Insight.Source.SUMMARY else "",
        headline=headline,
        statements=statements,
        checks=checks,
        digest=digest.data,
        digest_chars=len(text),
        model=spent.model,
        api=spent.api,
        prompt_version=PROMPT_VERSION,
        prompt_hash=prompt_hash(),
        attempts=spent.count,
        input_tokens=spent.input_tokens,
        output_tokens=spent.output_tokens,
        cost=spent.cost.quantize(Decimal("0.000001")),
        latency_ms=spent.latency_ms,
        requested_by=by,
        job=job,
    )
    _journal(insight, regenerated=earlier)
    return insight


def _journal(insight: Insight, *, regenerated: bool) -> None:
    """The compliance journal's entry of a written insight (after commit, as every entry): who or
    which job asked, the run and slice, the model and what its checks found."""
    by, run = insight.requested_by, insight.run
    failed = [c for c in insight.checks if not c.get("ok")]
    journal_append(
        kind=JournalEntry.Kind.INSIGHT,
        action="insight regenerated" if regenerated else "insight written",
        by=by,
        object=f"kpis.insight:{insight.pk}",
        rows=len(insight.statements) + 1,  # the headline and the published statements
        job=insight.job,
        run=f"kpis.snapshotrun:{run.pk}",
        as_of=run.as_of.isoformat(),
        basis=run.basis,
        slice=slice_label(insight.dimension, insight.member),
        source=insight.source,
        model=insight.model,
        api=insight.api,
        prompt_version=insight.prompt_version,
        prompt_hash=insight.prompt_hash,
        verification=insight.verification,
        checks={"passed": len(insight.checks) - len(failed), "failed": len(failed)},
        fallback_reason=insight.fallback_reason,
        tokens={"input": insight.input_tokens, "output": insight.output_tokens},
        cost=str(insight.cost),
    )


def insight_slices(run: SnapshotRun) -> list[tuple[str, str]]:
    """The slices insights are written for: the whole portfolio and each lending entity."""
    entities = (
        KpiValue.objects.filter(run=run, code="outstanding_principal", dimension=ENTITY)
        .order_by("member")
        .values_list("member", flat=True)
    )
    return [("portfolio", ""), *((ENTITY, member) for member in entities)]


def insights_for_run(
    *,
    run: SnapshotRun,
    job: str,
    by: User | None = None,
    budget: Budget | None = None,
    writer: Callable[..., Any] | None = None,
) -> list[Insight]:
    """The insights of the whole portfolio and of each entity at ``run``, under one budget."""
    budget = budget or Budget.per_run()
    insights = []
    for dim, mem in insight_slices(run):
        # A savepoint each: a slice that fails leaves the transaction usable for the step's record.
        with transaction.atomic():
            insights.append(
                insight_generate(
                    run=run, dimension=dim, member=mem, job=job, by=by, budget=budget, writer=writer
                )
            )
    return insights
