"""Abaco has no tables of its own; this module exists so Django sends it post_migrate (roles re-sync)."""
