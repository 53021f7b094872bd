"""Celery tasks of the audit trail (vigil/audit.py)."""
