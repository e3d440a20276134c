"""Log filters: one line per refused request, and nothing in a record that could split a line."""

from __future__ import annotations

import json
import logging
import re

from gunicorn.glogging import Logger, SafeAtoms

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


class JsonAtoms(SafeAtoms):
    """gunicorn's access-log values written as JSON string contents: quotes, backslashes and
    control characters escaped, so a path with a decoded ``%0A`` or ``%22`` stays one valid
    JSON line (gunicorn itself escapes only the double quote)."""

    def __init__(self, atoms: dict) -> None:
        dict.__init__(self)
        for key, value in atoms.items():
            self[key] = json.dumps(value)[1:-1] if isinstance(value, str) else value


class JsonAccessLogger(Logger):
    """gunicorn's logger with JSON-safe access-log values (infra/gunicorn.conf.py)."""

    atoms_wrapper_class = JsonAtoms
