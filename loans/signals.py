"""What the loan book announces after a load, to itself and to the layers above it (loans
imports neither kpis nor integrations: they listen).

``book_changed``: a load committed rows dated on or before ``changes_from`` (a date); any stored
snapshot on or after it read other data. Sent inside the load's transaction; a listener that
queues work does it in ``transaction.on_commit``. Arguments: ``changes_from``, ``batch_ids``.
"""

from __future__ import annotations

from django.dispatch import Signal

from loans.models import Batch
from loans.segments import customer_segments_refresh
from loans.selectors import book_data_through

book_changed = Signal()


def book_loaded(*, batches: list[Batch]) -> None:
    """After every load: behavioural segments from the book itself at its data-through date (so
    the segment slice works without the CRM), and ``book_changed`` when the load changed rows
    dated on or before a stored snapshot's date (the KPI snapshots restate them)."""
    loaded = [b for b in batches if b.status == Batch.Status.LOADED]
    if not loaded:
        return
    through = book_data_through()
    if through is not None:
        customer_segments_refresh(as_of=through)
    changed = [b.changes_from for b in loaded if b.changes_from is not None]
    if changed:
        book_changed.send(sender=Batch, changes_from=min(changed), batch_ids=[b.pk for b in loaded])
