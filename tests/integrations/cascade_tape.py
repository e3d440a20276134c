"""Cascade settings and tapes for the integration tests."""

from __future__ import annotations

from django.test import override_settings

from tests.integrations.fakes.cascade import PORTFOLIO, FakeCascade
from tests.loans.tape_files import HEADERS, Tape, tape_csv, tape_valid

TOKEN = "cascade-token-s3cr3t"


def cascade_on(base_url: str = "https://cascade.test", **extra) -> override_settings:
    values = {
        "CASCADE_ENABLED": True,
        "CASCADE_BASE_URL": base_url,
        "CASCADE_PORTFOLIO_ID": PORTFOLIO,
        "CASCADE_TOKEN": TOKEN,
        "CASCADE_SESSION_COOKIE": "",
        "CASCADE_RATE_PER_SECOND": 0,  # the fake has no limit; the seam's own tests cover limiting
        "HTTP_BACKOFF_BASE": 1.0,
        "HTTP_MAX_ATTEMPTS": 4,
    }
    return override_settings(**(values | extra))


def tape_texts(tape: Tape) -> dict[str, str]:
    return {f"{kind}.csv": tape_csv(rows, header=HEADERS[kind]) for kind, rows in tape.items()}


def fake_cascade(n_loans: int = 4, **options) -> FakeCascade:
    return FakeCascade(files=tape_texts(tape_valid(n_loans)), **({"token": TOKEN} | options))
