"""Retention and legal hold, and the daily journal export with its day hashes.

Retention: a personal field with a retention period (``FieldClassification.retention_days``) is
anonymised (emptied) on customers whose last loan matured more than that many days ago, and on
loans that matured that long ago, unless a legal hold covers the customer or the loan (a hold on a
loan protects its customer, a hold on a customer protects its loans). A dry run reports what a run
would do; every run, dry or not, is journaled with its report. The loan book is reached through the
app registry, not imported: compliance sits below loans in the layering (docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from compliance.journal import day_last_hashes, journal_append
from compliance.models import FieldClassification, JournalEntry, LegalHold

RETAINED_MODELS = ("loans.Customer", "loans.Loan")


@dataclass
class RetentionLine:
    model: str
    field: str
    retention_days: int
    cutoff: str
    due: int  # rows past the period whose value is not yet empty
    held: int  # of those, rows a legal hold protects
    anonymised: int = 0


def _held_ids() -> tuple[set[int], set[int]]:
    """(customer ids, loan ids) under an active hold, each side widened to the other's."""
    Loan = apps.get_model("loans", "Loan")
    customers: set[int] = set()
    loans: set[int] = set()
    for obj in LegalHold.objects.filter(released_at__isnull=True).values_list("object", flat=True):
        label, _, pk = obj.partition(":")
        if not pk.isdigit():
            continue
        (customers if label == "loans.customer" else loans).add(int(pk))
    customers |= set(Loan.objects.filter(pk__in=loans).values_list("customer_id", flat=True))
    loans |= set(Loan.objects.filter(customer_id__in=customers).values_list("pk", flat=True))
    return customers, loans


def _past(model_label: str, cutoff: date):
    Model = apps.get_model(model_label)
    if model_label == "loans.Customer":
        return Model.objects.annotate(last_maturity=Max("loans__maturity_date")).filter(
            last_maturity__lt=cutoff
        )
    return Model.objects.filter(maturity_date__lt=cutoff)


def _empty_value(model_label: str, field: str) -> Any:
    f = apps.get_model(model_label)._meta.get_field(field)
    return None if f.null else ""


def retention_run(
    *, dry_run: bool, by: Any = None, today: date | None = None
) -> list[RetentionLine]:
    """Anonymise what passed its retention period (or, dry, report it); journaled either way."""
    today = today or timezone.localdate()
    held_customers, held_loans = _held_ids()
    lines = []
    rules = FieldClassification.objects.filter(
        model__in=RETAINED_MODELS, personal=True, retention_days__isnull=False
    ).order_by("model", "field")
    with transaction.atomic():
        for rule in rules:
            days = rule.retention_days or 0  # the filter above keeps only rules that have one
            cutoff = today - timedelta(days=days)
            empty = _empty_value(rule.model, rule.field)
            rows = _past(rule.model, cutoff).exclude(
                Q(**{f"{rule.field}__isnull": True}) | Q(**{rule.field: ""})
                if empty == ""
                else Q(**{f"{rule.field}__isnull": True})
            )
            held = held_customers if rule.model == "loans.Customer" else held_loans
            line = RetentionLine(
                rule.model,
                rule.field,
                days,
                cutoff.isoformat(),
                due=rows.count(),
                held=rows.filter(pk__in=held).count(),
            )
            if not dry_run:
                Model = apps.get_model(rule.model)
                ids = rows.exclude(pk__in=held).values("pk")
                # A queryset update: no per-row history of the emptied values (they are personal
                # data the log must not keep); the run's journal entry records what was done.
                line.anonymised = Model.objects.filter(pk__in=ids).update(**{rule.field: empty})
            lines.append(line)
        journal_append(
            kind=JournalEntry.Kind.RETENTION,
            action="retention dry run" if dry_run else "retention run",
            actor_id=getattr(by, "pk", None),
            actor=by.get_username() if by is not None else "",
            rows=sum(line.anonymised for line in lines),
            extra={"report": [asdict(line) for line in lines], "as_of": today.isoformat()},
        )
    return lines


def legal_hold_place(*, object: str, reason: str, by: Any) -> LegalHold:
    """Hold a customer or loan ("loans.customer:<id>"); journaled through the audit history."""
    hold = LegalHold(object=object, reason=reason, created_by=by)
    hold.full_clean()
    hold.save()
    return hold


def legal_hold_release(*, hold: LegalHold, by: Any) -> LegalHold:
    hold.released_at, hold.released_by = timezone.now(), by
    hold.save(update_fields=["released_at", "released_by"])
    return hold


# --- The daily journal export ---


def journal_day_export(*, day: date, folder: Path | None = None) -> Path:
    """Write ``day``'s journal entries (operators' zone) as JSONL, then a last line with the day's
    last entry id and hash. Kept outside the database, so a rewritten chain is caught."""
    from compliance.exports import audit_lines
    from compliance.selectors import day_start

    folder = folder or settings.AUDIT_EXPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"journal-{day.isoformat()}.jsonl"
    tmp = path.with_suffix(".jsonl.part")
    last = next(
        (
            (entry_id, hash_)
            for d, entry_id, hash_ in day_last_hashes(since=day_start(day))
            if d == day.isoformat()
        ),
        None,
    )
    with tmp.open("w", encoding="utf-8") as out:
        for line in audit_lines(kind="journal", fmt="jsonl", since=day, until=day):
            out.write(line)
        out.write(
            json.dumps(
                {
                    "day_last_hash": last[1] if last else "",
                    "day_last_id": last[0] if last else None,
                    "day": day.isoformat(),
                }
            )
            + "\n"
        )
    tmp.replace(path)
    return path


def exported_hashes_check(*, folder: Path) -> list[str]:
    """Each exported day's last hash against the journal now; the problems found."""
    from compliance.models import JournalEntry as Entry

    problems = []
    for path in sorted(folder.glob("journal-*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            tail = None
            for tail in lines:  # noqa: B007 - the last line holds the day hash
                pass
        seal = json.loads(tail) if tail else {}
        if not seal.get("day_last_id"):
            continue
        now = Entry.objects.filter(pk=seal["day_last_id"]).values_list("hash", flat=True).first()
        if now != seal["day_last_hash"]:
            problems.append(
                f"{path.name}: journal entry {seal['day_last_id']} no longer has the hash exported "
                f"on {seal['day']} (the chain was rewritten)"
            )
    return problems


class ChainBroken(Exception):
    pass


def audit_daily(*, today: date | None = None) -> str:
    """The daily audit job: verify the chain and the day hashes exported before, then export
    yesterday's journal. Raises ``ChainBroken`` (the task alerts) when either fails."""
    from compliance.journal import chain_verify

    checked, broken = chain_verify()
    if broken is not None:
        raise ChainBroken(f"audit journal chain broken at {broken}")
    problems = exported_hashes_check(folder=settings.AUDIT_EXPORT_DIR)
    if problems:
        raise ChainBroken("; ".join(problems))
    day = (today or timezone.localdate()) - timedelta(days=1)
    path = journal_day_export(day=day)
    return f"chain holds ({checked:,} entries); wrote {path}"


def retention_daily() -> str:
    dry = retention_run(dry_run=True)
    done = retention_run(dry_run=False)
    return (
        "; ".join(
            f"{a.model}.{a.field}: {a.due} due, {a.held} held, {b.anonymised} anonymised"
            for a, b in zip(dry, done, strict=True)
        )
        or "no retention periods set"
    )
