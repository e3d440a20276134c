"""The ``cascade_ingest`` pipeline: fetch the tape export, keep it raw, import it.

The import is ``loans.services.tape_import``, the same service as admin uploads and the
``import_tape`` command: all or nothing, each file kept raw with its SHA-256, and files whose bytes
were loaded before are not loaded again, so an unchanged export is a no-op and a run killed
midway can simply run again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from integrations.cascade.client import CascadeClient
from integrations.pipelines import RunContext
from loans.lineage import TapeRejected
from loans.models import Batch
from loans.services import tape_import

SOURCE = "cascade"


class TapeRefused(Exception):
    """Cascade's tape has errors: nothing was written; the message lists them."""


def cascade_ingest(ctx: RunContext) -> None:
    with tempfile.TemporaryDirectory(prefix="cascade-") as folder:
        with (
            ctx.step("fetch") as step,
            CascadeClient(transport=ctx.transport, sleep=ctx.sleep) as client,
        ):
            download = client.export_download(Path(folder))
            step.log(
                f"{', '.join(download.files)}: {download.size:,} bytes, sha256 {download.sha256[:12]}…, "
                f"{client.session.requests_made} request(s)"
            )
        with ctx.step("import") as step:
            try:
                # The export is the platform's book as it stands when fetched: its data runs to
                # the run's date (yesterday) even on a day without a payment or disbursement.
                result = tape_import(
                    path=download.path,
                    source=SOURCE,
                    by=ctx.by,
                    job=ctx.run.job,
                    data_through=ctx.for_date,
                )
            except TapeRejected as rejected:
                raise TapeRefused(
                    f"the tape was refused, nothing was written: {rejected}"
                ) from None
            for batch in result.duplicates:
                step.log(
                    f"{batch.original_name}: same bytes as batch {batch.duplicate_of_id}, not loaded again"
                )
            for load in result.files:
                step.rows_in += load.rows_read
                step.rows_out += load.inserted + load.updated
                step.log(
                    f"{load.tape_file.name}: {load.rows_read:,} read, {load.inserted:,} inserted, "
                    f"{load.updated:,} updated, {load.unchanged:,} unchanged"
                )
                step.columns += [f"{load.tape_file.kind}.{c}" for c in load.tape_file.header(",")]
            for problem in result.problems:
                step.log(f"warning: {problem}")
            if result.files:
                ctx.quality_check(step)
            elif all(b.status == Batch.Status.DUPLICATE for b in result.batches):
                step.log("unchanged export: nothing to load")
