"""Tape import: files in, validated in bulk, merged set-based into the normalized tables."""
