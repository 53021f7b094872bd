"""Keeping secrets out of output: URLs with credentials are shown redacted."""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED: Final = "***"
# Query parameters that carry credentials in camera and storage URLs.
SECRET_PARAMS: Final = frozenset(
    {"password", "passwd", "pwd", "pass", "token", "access_token", "secret", "key",
     "signature", "x-amz-signature", "x-amz-credential", "auth", "authorization"})


def redact_url(url: str) -> str:
    """``url`` with its password and credential-bearing query values replaced."""
    try:
        parts = urlsplit(url)
        secret_query = any(k.lower() in SECRET_PARAMS for k, _ in parse_qsl(parts.query))
        if "@" not in parts.netloc and not secret_query:
            return url  # nothing to hide: keep the URL exactly as written
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{user}@{host}"
        query = urlencode([(k, REDACTED if k.lower() in SECRET_PARAMS else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)],
                          safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return REDACTED
