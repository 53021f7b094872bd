"""One rooted error hierarchy.

The domain raises these; the API's single exception handler maps each class to an
HTTP status (``http_status``) and the CLI prints ``str(error)`` and exits non-zero.
Messages are written for the person who reads them and never contain a secret.
"""

from __future__ import annotations


class VigilError(Exception):
    """Root of every error Vigil raises on purpose."""

    http_status: int = 500
    code: str = "internal_error"


class ConfigurationError(VigilError):
    """The settings are missing, unsafe or inconsistent."""

    code = "configuration_error"


class StackError(VigilError):
    """The embedded stack could not be started, reached or stopped."""

    code = "stack_error"


class Unauthenticated(VigilError):
    http_status = 401
    code = "unauthenticated"


class Forbidden(VigilError):
    http_status = 403
    code = "forbidden"


class NotFound(VigilError):
    http_status = 404
    code = "not_found"


class Conflict(VigilError):
    http_status = 409
    code = "conflict"


class InvalidInput(VigilError):
    http_status = 422
    code = "invalid_input"


class StorageError(VigilError):
    """The object store refused or failed an operation."""

    http_status = 503
    code = "storage_error"


class IntegrityError(VigilError):
    """Stored bytes do not match what the catalog recorded for them."""

    code = "integrity_error"
