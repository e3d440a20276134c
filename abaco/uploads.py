"""Uploads past UPLOAD_MAX_BYTES: the bytes past the limit are counted, never written, and the
form that receives the file refuses it by name (``upload_size_refusal``)."""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler


class BoundedUploadHandler(TemporaryFileUploadHandler):
    """Writes at most UPLOAD_MAX_BYTES of a file to its temporary file; ``size`` stays the
    number of bytes the client sent, so the form can say how far past the limit it was."""

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        room = settings.UPLOAD_MAX_BYTES - self.received
        self.received += len(raw_data)
        if room > 0:
            self.file.write(raw_data[:room])

    def file_complete(self, file_size: int):
        file = super().file_complete(file_size)
        assert file is not None  # a temporary file always completes
        file.size = self.received
        return file


def upload_size_refusal(file) -> str:
    """Why an uploaded file is refused for its size, or ""."""
    if file is not None and file.size > settings.UPLOAD_MAX_BYTES:
        return (
            f"{file.name} is {file.size:,} bytes, more than the {settings.UPLOAD_MAX_BYTES:,} "
            "an upload may have (UPLOAD_MAX_BYTES): nothing was kept."
        )
    return ""
