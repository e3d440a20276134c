"""Tasks the cluster runs for the loans app: they take ids, load, and call a service."""

from __future__ import annotations

from auditlog.context import set_actor

from loans.models import Upload
from loans.services import upload_check, upload_load


def upload_load_task(upload_id: int) -> str:
    upload = Upload.objects.select_related("created_by").get(pk=upload_id)
    # History of anything the load touches names the person who asked for it.
    with set_actor(upload.created_by):
        upload_load(upload=upload)
    upload.refresh_from_db()
    return upload.status


def upload_check_task(upload_id: int) -> str:
    """The dry run of a new upload: its page shows the progress, then what it found."""
    upload = Upload.objects.select_related("created_by").get(pk=upload_id)
    upload_check(upload=upload)
    upload.refresh_from_db()
    return upload.status
