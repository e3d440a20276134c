"""Pages of the loans app outside the admin: a batch's raw file, streamed to who may read it."""

from __future__ import annotations

from pathlib import Path

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404

from abaco.roles import role_required
from loans.selectors import batches_visible_to


@role_required("loans.view_raw_file")
def batch_raw_file(request: HttpRequest, pk: int) -> FileResponse:
    """The file a batch was loaded from, unchanged, as an attachment.

    Read through the storage backend (local disk or Blob storage alike) and streamed in chunks;
    nothing under MEDIA_ROOT is ever served directly. Uploaders reach only the batches they
    brought, as in the admin."""
    batch = get_object_or_404(batches_visible_to(request.user), pk=pk)
    if not batch.file.name or not default_storage.exists(batch.file.name):
        raise Http404("This batch keeps no raw file.")
    # "tape.zip:loans.csv" is the ZIP's member loans.csv: that is what the batch kept.
    name = Path(batch.original_name.split(":")[-1]).name or Path(batch.file.name).name
    return FileResponse(
        default_storage.open(batch.file.name, "rb"), as_attachment=True, filename=name
    )
