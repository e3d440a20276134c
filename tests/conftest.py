"""Shared pytest configuration: the cast lives in tests/base.py, rows come from tests/factories.py."""

from django.db.backends.signals import connection_created


def _journal_flush_allowed(sender, connection, **kwargs):
    """The flush between TransactionTestCases truncates every table, the append-only journal too
    (its TRUNCATE trigger lets this setting through; compliance.models.JournalEntry)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET abaco.journal_flush = 'on'")


connection_created.connect(_journal_flush_allowed, dispatch_uid="tests.journal_flush")
