"""Footage lifecycle: retention rules, the sweeper, evidence holds, WORM storage and
integrity scrubs (issue 5, docs/design/storage.md)."""
