"""Ingest tests use the share fixtures of tests/conftest.py (shared with other stages)."""
