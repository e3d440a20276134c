"""As reported or restated: whether a recomputed date's numbers changed (docs/design.md,
"Data cut-off and restatement").

The first run of a date is kept *as reported*. Recomputed later: when the numbers come out the
same, the as-reported run stands (nothing to restate, and an earlier restatement is withdrawn);
when they differ (a late correction), the new run is stored as *restated* beside the
as-reported one. Recomputed under another definition version (kpis.definitions.VERSION), it is
restated whatever the numbers: they mean something else. A restated run says why.
"""

from __future__ import annotations

import logging

from django.db.backends.utils import CursorWrapper
from psycopg import sql

from kpis import definitions as d
from kpis.engine.runs import run_delete
from kpis.models import SnapshotRun

logger = logging.getLogger("kpis.engine")

# A value of the reported run (b) that the new run (a) lacks or changed, but for a monthly rate
# that had none.
VALUES_DIFFER = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM kpis_kpivalue b LEFT JOIN kpis_kpivalue a "
    "ON a.run_id = %s AND a.code = b.code AND a.dimension = b.dimension AND a.member = b.member "
    "WHERE b.run_id = %s AND a.value IS DISTINCT FROM b.value "
    "AND NOT (b.value IS NULL AND b.code = ANY(%s)))"
)
# A value of the new run (a) for a KPI and slice the reported run (b) has none of.
VALUES_ADDED = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM kpis_kpivalue a WHERE a.run_id = %s AND NOT EXISTS ("
    "SELECT 1 FROM kpis_kpivalue b WHERE b.run_id = %s AND b.code = a.code AND b.dimension = a.dimension AND b.member = a.member))"
)


def _values_differ(cursor: CursorWrapper, run: SnapshotRun, reported: SnapshotRun) -> bool:
    """Did any number that was reported change? KPIs added since are not a restatement, and
    neither is a monthly rate appearing because the previous month-end was computed later."""
    cursor.execute(VALUES_DIFFER, [run.pk, reported.pk, list(d.FROM_PREVIOUS_MONTH_END)])
    differ: bool = cursor.fetchone()[0]
    return differ


def _adds_values(cursor: CursorWrapper, run: SnapshotRun, reported: SnapshotRun) -> bool:
    cursor.execute(VALUES_ADDED, [run.pk, reported.pk])
    adds: bool = cursor.fetchone()[0]
    return adds


def _restated(run: SnapshotRun, reason: str) -> SnapshotRun:
    run.restatement_reason = reason
    run.save(update_fields=["restatement_reason"])
    return run


def restatement_settle(
    cursor: CursorWrapper, *, run: SnapshotRun, reported: SnapshotRun | None, reasons: list[str]
) -> SnapshotRun:
    """The run that stands for the date once ``run`` is computed: ``run`` itself (the first of
    its date, a restatement, or the as-reported run's successor when it only adds KPIs), or
    ``reported`` when the numbers stand (``run`` is then deleted)."""
    if reported is None:
        return run
    if reported.definition_version != run.definition_version:
        return _restated(
            run, f"definition version {reported.definition_version} → {run.definition_version}"
        )
    if _values_differ(cursor, run, reported):
        return _restated(run, "the numbers changed since it was reported (a late correction)")
    if not _adds_values(cursor, run, reported):
        run_delete(cursor, run)
        # The numbers stand; whether they are provisional is a fact of now.
        reported.provisional, reported.provisional_reasons = bool(reasons), reasons
        # Its loan states are its first computation's: equal values do not make every state
        # equal (a DPD that moved within its bucket), so no later run carries them forward.
        reported.engine_settings = {}
        reported.save(update_fields=["provisional", "provisional_reasons", "engine_settings"])
        logger.info("snapshot unchanged", extra={"as_of": str(run.as_of)})
        return reported
    # Same numbers plus KPIs that did not exist when it was reported: nothing is restated, so
    # the new run becomes the as-reported one.
    run_delete(cursor, reported)
    run.basis = SnapshotRun.Basis.AS_REPORTED
    run.save(update_fields=["basis"])
    return run
