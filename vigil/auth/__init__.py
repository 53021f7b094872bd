"""Principals, roles and bearer tokens (``service``), and the API's guards (``api``)."""
