"""Shared pytest configuration: the cast lives in tests/base.py, rows come from tests/factories.py."""
