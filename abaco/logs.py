"""Log filters: one line per refused request, and nothing in a record that could split a line."""

from __future__ import annotations

import logging
import re

CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escaped(value: object) -> object:
    if isinstance(value, str):
        return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value


class EscapeControlCharacters(logging.Filter):
    """Writes control characters (a request path's newline, NUL) as ``\\xNN`` in the message, so
    every consumer (JSON, plain text, gunicorn's error log) sees one record as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _escaped(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_escaped(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _escaped(v) for k, v in record.args.items()}
        return True


class NoTracebackForRefusals(logging.Filter):
    """A 400, 403 or 404 is the app working as meant: log its one line, never a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) in (400, 403, 404) or record.name.startswith(
            "django.security"
        ):
            record.exc_info = None
            record.exc_text = None
        return True
