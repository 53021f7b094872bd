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
    """No principal for the request. ``known_credential``: the value was recognised as
    a credential that Vigil or its issuer really made (a Vigil token whose hash is
    stored; a JWT whose signature verified) and was refused for its age, revocation or
    a disabled principal: a stale credential, not a guess, so the failure rate limit
    does not count it (retrieval/limits.py). The caller is never told: the message is
    the same."""

    http_status = 401
    code = "unauthenticated"

    def __init__(self, message: str, *, known_credential: bool = False) -> None:
        super().__init__(message)
        self.known_credential = known_credential


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


class TooManyRequests(VigilError):
    """A rate limit is spent (retrieval/limits.py); ``retry_after_s`` says when the
    window frees (the API sends it as ``Retry-After``)."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
