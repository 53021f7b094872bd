"""OIDC bearer JWTs, besides Vigil's own tokens (docs/design/authentication.md).

A bearer value that is not a Vigil token (``vgl_...``) is, when ``VIGIL_OIDC_ISSUER``
is set, a JWT from that issuer (``vigil.auth.service.authenticate_bearer``). It is
checked in this order, and refused at the first failure:

1. Shape: at most ``MAX_JWT_CHARS``, a JWS compact serialisation whose header parses.
2. Header: ``alg`` is one of ``ALLOWED_ALGORITHMS`` (asymmetric only: never ``none``
   or HS*, so that a token "signed" with the issuer's public key as an HMAC secret
   fails), and ``kid`` names a key.
3. Key: the issuer's JWKS holds a signing key with that ``kid`` (``_KeySource``:
   cached ``VIGIL_OIDC_JWKS_TTL_S``, refetched once when a ``kid`` is unknown). The
   key fixes the algorithm: the header's ``alg`` must be the key's (its JWK ``alg``,
   else PyJWT's default for its type), so that a token never verifies under an
   algorithm its issuer did not publish for the key.
4. Signature, ``iss`` == ``VIGIL_OIDC_ISSUER``, ``aud`` holds ``VIGIL_OIDC_AUDIENCE``,
   and ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` present (PyJWT).
5. Times, against the caller's ``now`` with ``VIGIL_OIDC_LEEWAY_S`` either way:
   ``exp`` is after now, ``iat`` and ``nbf`` (if any) are not after now.
6. Claims: ``sub`` (and ``jti`` if any) is a string of at most ``MAX_ID_CHARS``; the
   role claim is one of ``OIDC_ROLES``; the region claim, a region code, is present
   unless the role is admin (least privilege: see ``grants``).
7. Revocation: the ``jti`` is not in ``revoked_jwts``.
8. Region: the region code exists.
9. Principal: found by (issuer, ``sub``), or created; not disabled; its role and
   region follow the claims, and a change is audited (``principal.claims_changed``).

Every refusal is ``Unauthenticated("invalid or expired token")``, the message of
local tokens: it never says which check failed, and never echoes the token. The
reason is logged (``vigil.auth.oidc``), without the token. A token whose signature
verified and that fails only at step 5, 7 or 9 (too old or too new, revoked, disabled
principal) is refused as a ``known_credential``: the issuer made it, so it is stale,
not guessed, and the failure rate limit does not count it. An identity provider that
cannot be reached, or answers with something that is not a key set, is not the
caller's fault: ``IdentityProviderUnavailable`` (HTTP 503), naming its host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import jwt
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DatabaseConflict
from sqlalchemy.orm import Session

from vigil import audit
from vigil.catalog.models import Principal, Region, RevokedJwt, RoleName
from vigil.errors import ConfigurationError, Conflict, InvalidInput, Unauthenticated, VigilError
from vigil.settings import Profile, Settings

log = logging.getLogger("vigil.auth.oidc")

REFUSED: Final = "invalid or expired token"
# Asymmetric algorithms only: a symmetric one would let anyone holding the issuer's
# *public* key (everyone) sign tokens; ``none`` would let anyone at all.
ALLOWED_ALGORITHMS: Final = ("RS256", "PS256", "ES256", "EdDSA")
REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub")
# Roles a token may carry. Recorders are service accounts with Vigil tokens.
OIDC_ROLES: Final = frozenset({RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR})
# Far above any OIDC access token seen in practice (a few KB); bounds the work done
# on a value before its signature is checked.
MAX_JWT_CHARS: Final = 8192
# OpenID Connect Core 1.0, 2: ``sub`` is at most 255 ASCII characters. ``jti`` is held
# to the same, as it becomes a primary key.
MAX_ID_CHARS: Final = 255
# Principal names made from ``preferred_username``: readable, bounded, no control
# characters (they end up in the CLI, logs and the audit trail).
MAX_NAME_CHARS: Final = 64
_NAME_UNSAFE: Final = re.compile(r"[^\w.@+-]")
# Clashing names get "-2" ... "-9", then a suffix derived from (issuer, sub).
_NAME_NUMBERED: Final = 9

DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
# The longest a refresh of the keys (discovery document and JWKS, from connecting to the
# last byte) may take, whatever the provider does: requests wait on it, under the key
# source's lock. A few KB from a healthy provider take milliseconds.
JWKS_TIMEOUT_S: Final = 5.0
# A key set is a few KB; anything much larger is not one.
MAX_JWKS_BYTES: Final = 256 * 1024
# An unknown ``kid`` refetches the JWKS at most this often, so that tokens with made-up
# key ids cost one fetch per interval, however many arrive.
JWKS_REFRESH_COOLDOWN_S: Final = 10.0
# After a failed fetch, requests are answered 503 for this long without fetching again,
# so that an unreachable provider does not hold every request for JWKS_TIMEOUT_S.
JWKS_FAILURE_BACKOFF_S: Final = 5.0
# A revoked jti is kept this long past the expiry given for it: the largest
# VIGIL_OIDC_LEEWAY_S (vigil/settings.py), during which the token is still accepted.
REVOCATION_MARGIN: Final = timedelta(seconds=300)


class IdentityProviderUnavailable(VigilError):
    """The issuer's discovery document or key set could not be fetched or used."""

    http_status = 503
    code = "identity_provider_unavailable"


@dataclass(frozen=True)
class Claims:
    """What a verified token says, in Vigil's terms (not yet checked against the catalog)."""

    issuer: str
    subject: str
    jti: str | None
    expires_at: datetime
    role: RoleName
    region_code: str | None
    name_hint: str


# --- verification (steps 1-6) --------------------------------------------------------


def _refused(reason: str, *args: object, level: int = logging.WARNING,
             known: bool = False) -> Unauthenticated:
    """The refusal to raise; ``known``: the signature verified (see the module doc)."""
    log.log(level, "OIDC token refused: " + reason, *args)
    return Unauthenticated(REFUSED, known_credential=known)


def _configured(settings: Settings) -> tuple[str, str]:
    if not settings.oidc_issuer:
        raise ConfigurationError("OIDC tokens need VIGIL_OIDC_ISSUER")
    if not settings.oidc_audience:
        raise ConfigurationError("VIGIL_OIDC_AUDIENCE must be set when VIGIL_OIDC_ISSUER is: "
                                 "without it, tokens the issuer signs for other clients "
                                 "would be accepted")
    return settings.oidc_issuer, settings.oidc_audience


def verify(*, token: str, settings: Settings, now: datetime) -> Claims:
    """Steps 1-6 of the module doc: the claims of a genuine, current token for Vigil.

    Raises ``Unauthenticated`` for any token that fails, ``IdentityProviderUnavailable``
    when the issuer's keys cannot be fetched, ``ConfigurationError`` when the settings
    cannot check a token at all.
    """
    issuer, audience = _configured(settings)
    # 1. Shape.
    if not token or len(token) > MAX_JWT_CHARS:
        raise _refused("empty or longer than %d characters", MAX_JWT_CHARS, level=logging.INFO)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise _refused("not a JWT (%s)", type(exc).__name__, level=logging.INFO) from None
    # 2. Header.
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALLOWED_ALGORITHMS:
        raise _refused("algorithm %.20r is not accepted", alg)
    if not isinstance(kid, str) or not kid:
        raise _refused("no key id (kid) in the header")
    # 3. Key.
    key = _key_source(settings).signing_key(kid)
    if key is None:
        raise _refused("key id %.64r is not in the issuer's key set", kid)
    if alg != key.algorithm_name:
        # PyJWT 2.15 refuses this too; older releases verified with the key's algorithm
        # whatever the header said. Checked here so as not to depend on the release.
        raise _refused("algorithm %r is not %r, that of key id %.64r", alg,
                       key.algorithm_name, kid)
    # 4. Signature, issuer, audience, required claims.
    try:
        payload = jwt.decode(
            token, key, algorithms=list(ALLOWED_ALGORITHMS), audience=audience, issuer=issuer,
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False,
                     "enforce_minimum_key_length": True})
    except jwt.MissingRequiredClaimError as exc:
        raise _refused("claim %r is missing", exc.claim) from None
    except jwt.PyJWTError as exc:
        # InvalidSignatureError, InvalidIssuerError, InvalidAudienceError, ...: the
        # class says which check failed; the message may quote the token's values.
        raise _refused("%s (key id %.64r)", type(exc).__name__, kid) from None
    # 5. Times.
    expires_at = _check_times(payload, now=now, leeway_s=settings.oidc_leeway_s)
    # 6. Claims.
    subject, jti = payload["sub"], payload.get("jti")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_ID_CHARS:
        raise _refused("sub is not a string of 1 to %d characters", MAX_ID_CHARS)
    if jti is not None and (not isinstance(jti, str) or not jti or len(jti) > MAX_ID_CHARS):
        raise _refused("jti of %.64r is not a string of 1 to %d characters", subject,
                       MAX_ID_CHARS)
    role, region_code = grants(payload, settings=settings)
    hint = payload.get("preferred_username")
    return Claims(issuer=issuer, subject=subject, jti=jti, expires_at=expires_at, role=role,
                  region_code=region_code,
                  name_hint=hint if isinstance(hint, str) and hint.strip() else subject)


def _numeric_date(payload: dict[str, Any], claim: str) -> float:
    value = payload[claim]
    try:
        seconds = float(value) if isinstance(value, int | float) else math.nan
    except OverflowError:  # an integer beyond any float
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds):
        raise _refused("claim %s is not a number of seconds", claim)
    return seconds


def _check_times(payload: dict[str, Any], *, now: datetime, leeway_s: int) -> datetime:
    """Step 5; returns the token's expiry."""
    t = now.timestamp()
    exp, iat = _numeric_date(payload, "exp"), _numeric_date(payload, "iat")
    if exp <= t - leeway_s:
        raise _refused("expired %.0f s ago (sub %.64r)", t - exp, payload.get("sub"),
                       level=logging.INFO, known=True)
    if iat > t + leeway_s:
        raise _refused("issued %.0f s in the future (sub %.64r)", iat - t, payload.get("sub"),
                       known=True)
    if "nbf" in payload and _numeric_date(payload, "nbf") > t + leeway_s:
        raise _refused("not valid yet (nbf; sub %.64r)", payload.get("sub"), level=logging.INFO,
                       known=True)
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise _refused("exp %r is out of range", exp) from None


def grants(payload: dict[str, Any], *, settings: Settings) -> tuple[RoleName, str | None]:
    """The role and region code a verified token grants (no I/O but the log).

    The role claim must name one of ``OIDC_ROLES``. The region claim is a region code.
    Least privilege: a token without a region claim is refused unless its role is admin,
    so that an identity provider that forgets to send the claim does not hand every
    investigator and auditor the whole country; an admin without one is bound to no
    region (everything), as system-wide operations need.
    """
    sub = payload.get("sub")
    role_value = payload.get(settings.oidc_role_claim)
    try:
        role = RoleName(role_value) if isinstance(role_value, str) else None
    except ValueError:
        role = None
    if role not in OIDC_ROLES:
        raise _refused("role claim %s is %.40r, not one of %s (sub %.64r)",
                       settings.oidc_role_claim, role_value,
                       ", ".join(sorted(OIDC_ROLES)), sub)
    region_code = payload.get(settings.oidc_region_claim)
    if region_code is None or region_code == "":
        if role is not RoleName.ADMIN:
            raise _refused("no region claim %s for role %s (sub %.64r)",
                           settings.oidc_region_claim, role.value, sub)
        return role, None
    if not isinstance(region_code, str):
        raise _refused("region claim %s is not a string (sub %.64r)",
                       settings.oidc_region_claim, sub)
    return role, region_code


# --- the issuer's keys ----------------------------------------------------------------


def _host(url: str) -> str:
    """The host (and port) of ``url``: what messages name, never credentials or paths."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "an invalid URL"


# Fetches run here, so that the request waiting on one is answered at its deadline even
# while a provider trickles bytes (httpx's timeouts are per phase and per read, and a
# read blocks): the caller stops waiting at the deadline, the thread at the next block
# after it (or one read timeout). Queued behind stuck fetches, a fetch times out too.
_FETCHER: Final = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vigil-oidc-fetch")


def _get_json(url: str, *, what: str, deadline: float) -> dict[str, Any]:
    """GET ``url`` as a JSON object: no redirects, at most ``MAX_JWKS_BYTES``, and done
    by ``deadline`` (``time.monotonic()``), else given up."""
    where = f"{what} at {_host(url)}"

    def unavailable(reason: str) -> IdentityProviderUnavailable:
        return IdentityProviderUnavailable(
            f"sign-in with the identity provider is unavailable: {where} {reason}; "
            "try again later")

    too_slow = f"did not answer within {JWKS_TIMEOUT_S:g} s"

    def read() -> bytes:
        with httpx.Client(timeout=JWKS_TIMEOUT_S, follow_redirects=False) as client, \
                client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise unavailable(f"answered HTTP {response.status_code}")
            body = bytearray()
            for block in response.iter_bytes():
                body += block
                if len(body) > MAX_JWKS_BYTES:
                    raise unavailable(f"answered with more than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise unavailable(too_slow)
            return bytes(body)

    fetch = _FETCHER.submit(read)
    try:
        body = fetch.result(timeout=max(0.0, deadline - time.monotonic()))
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # The class only: httpx's messages may quote the URL.
        raise unavailable(f"could not be reached ({type(exc).__name__})") from None
    except TimeoutError:
        fetch.cancel()  # if it has not started
        raise unavailable(too_slow) from None
    try:
        document = json.loads(body)
    except ValueError:
        raise unavailable("answered with something that is not JSON") from None
    if not isinstance(document, dict):
        raise unavailable("answered with JSON that is not an object")
    return document


class _KeySource:
    """One issuer's signing keys by ``kid``: fetched when first needed, again after
    ``ttl_s``, and once more when a token names a ``kid`` the cached set lacks (key
    rotation), at most every ``JWKS_REFRESH_COOLDOWN_S``. A failed fetch fails closed
    (no stale keys are used) and is repeated to callers for ``JWKS_FAILURE_BACKOFF_S``.
    """

    def __init__(self, *, issuer: str, jwks_url: str | None, ttl_s: float,
                 https_only: bool) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.ttl_s = ttl_s
        # Whether a jwks_uri from the discovery document must be https (``_key_source``).
        self.https_only = https_only
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # time.monotonic()
        self._forced_at: float | None = None
        self._failed: tuple[float, str] | None = None

    def signing_key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            now = time.monotonic()
            fetched = False
            if self._fetched_at is None or now - self._fetched_at >= self.ttl_s:
                self._refresh(now)
                fetched = True
            key = self._keys.get(kid)
            if (key is None and not fetched
                    and (self._forced_at is None
                         or now - self._forced_at >= JWKS_REFRESH_COOLDOWN_S)):
                self._forced_at = now
                log.info("OIDC: key id %.64r unknown; fetching the key set again", kid)
                self._refresh(now)
                key = self._keys.get(kid)
            return key

    def _refresh(self, now: float) -> None:
        if self._failed is not None and now - self._failed[0] < JWKS_FAILURE_BACKOFF_S:
            raise IdentityProviderUnavailable(self._failed[1])
        try:
            self._keys = self._fetch()
        except IdentityProviderUnavailable as exc:
            log.warning("OIDC: %s", exc)
            self._failed = (now, str(exc))
            raise
        self._failed = None
        self._fetched_at = now

    def _jwks_url(self, deadline: float) -> str:
        if self.jwks_url:
            return self.jwks_url
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        document = _get_json(url, what="the OpenID discovery document", deadline=deadline)
        where = f"the OpenID discovery document at {_host(url)}"
        if document.get("issuer") != self.issuer:
            # OpenID Connect Discovery 1.0, 4.3: the issuer must be the one asked.
            raise IdentityProviderUnavailable(
                f"{where} names issuer {str(document.get('issuer'))[:200]!r}, not "
                f"VIGIL_OIDC_ISSUER {self.issuer!r}")
        jwks_uri = document.get("jwks_uri")
        try:
            scheme = urlsplit(jwks_uri).scheme if isinstance(jwks_uri, str) else None
        except ValueError:
            scheme = None
        if scheme == "http" and self.https_only:
            # Keys fetched in clear could be swapped on the way: an https issuer (or any
            # issuer in production) must not be downgraded by its own discovery document.
            raise IdentityProviderUnavailable(
                f"{where} names a plain http:// jwks_uri (host {_host(jwks_uri)}); an https "
                "issuer, and any issuer in production, needs an https:// one")
        if scheme not in ("https", "http"):
            raise IdentityProviderUnavailable(f"{where} has no http(s) jwks_uri")
        return jwks_uri

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        deadline = time.monotonic() + JWKS_TIMEOUT_S  # discovery and JWKS together
        url = self._jwks_url(deadline)
        document = _get_json(url, what="the key set (JWKS)", deadline=deadline)
        try:
            key_set = jwt.PyJWKSet.from_dict(document)
        except jwt.PyJWTError:
            key_set = None
        keys: dict[str, jwt.PyJWK] = {}
        for key in key_set or ():
            # Keys for other uses or algorithms (an HMAC "oct" key, say) are never used.
            if (key.key_id and key.public_key_use in ("sig", None)
                    and key.algorithm_name in ALLOWED_ALGORITHMS):
                keys.setdefault(key.key_id, key)
        if not keys:
            raise IdentityProviderUnavailable(
                f"the key set (JWKS) at {_host(url)} holds no usable signing key "
                f"(with a kid, for one of {', '.join(ALLOWED_ALGORITHMS)})")
        log.info("OIDC: fetched %d signing key(s) from %s", len(keys), _host(url))
        return keys


_SOURCES: dict[tuple[str, str | None, float, bool], _KeySource] = {}
_SOURCES_LOCK: Final = threading.Lock()


def _key_source(settings: Settings) -> _KeySource:
    """The process-wide key cache for the configured issuer and JWKS URL."""
    issuer = settings.oidc_issuer or ""
    https_only = (issuer.lower().startswith("https://")
                  or settings.profile is Profile.PRODUCTION)
    ident = (issuer, settings.oidc_jwks_url, settings.oidc_jwks_ttl_s, https_only)
    with _SOURCES_LOCK:
        source = _SOURCES.get(ident)
        if source is None:
            source = _SOURCES[ident] = _KeySource(issuer=issuer,
                                                  jwks_url=settings.oidc_jwks_url,
                                                  ttl_s=settings.oidc_jwks_ttl_s,
                                                  https_only=https_only)
        return source


# --- the catalog (steps 7-9) ------------------------------------------------------------


def authenticate(*, session: Session, token: str, settings: Settings,
                 now: datetime) -> Principal:
    """The principal of an OIDC bearer JWT (every step of the module doc). Flushes.

    Logins are audited by the caller (``vigil.auth.service.authenticate_bearer``).
    """
    claims = verify(token=token, settings=settings, now=now)
    # 7. Revocation: by jti alone, whatever issuer it was revoked for (fails closed).
    if claims.jti is not None and session.get(RevokedJwt, claims.jti) is not None:
        raise _refused("jti %.64r is revoked (sub %.64r)", claims.jti, claims.subject,
                       known=True)
    # 8. Region.
    region = None
    if claims.region_code is not None:
        region = session.scalars(
            select(Region).where(Region.code == claims.region_code)).one_or_none()
        if region is None:
            raise _refused("region %.40r does not exist (sub %.64r)", claims.region_code,
                           claims.subject)
    # 9. Principal.
    principal = _principal_of(session=session, claims=claims)
    if principal is None:
        return _create_principal(session=session, claims=claims, region=region)
    if principal.disabled_at is not None:
        raise _refused("principal %r is disabled", principal.name, known=True)
    _follow_claims(session=session, principal=principal, claims=claims, region=region)
    return principal


def _principal_of(*, session: Session, claims: Claims) -> Principal | None:
    return session.scalars(select(Principal).where(
        Principal.oidc_issuer == claims.issuer,
        Principal.oidc_subject == claims.subject)).one_or_none()


def _name_candidates(claims: Claims) -> Iterator[str]:
    base = _NAME_UNSAFE.sub("_", claims.name_hint.strip())[:MAX_NAME_CHARS]
    yield base
    for n in range(2, _NAME_NUMBERED + 1):
        yield f"{base}-{n}"
    ident = hashlib.sha256(f"{claims.issuer}\0{claims.subject}".encode()).hexdigest()
    yield f"{base}-{ident[:12]}"


def _create_principal(*, session: Session, claims: Claims, region: Region | None) -> Principal:
    """A principal for a subject seen for the first time, under the first free name."""
    for name in _name_candidates(claims):
        taken = select(Principal.id).where(Principal.name == name)
        if session.scalars(taken).first() is not None:
            continue
        principal = Principal(name=name, role=claims.role.value,
                              region_id=region.id if region is not None else None,
                              oidc_issuer=claims.issuer, oidc_subject=claims.subject)
        try:
            with session.begin_nested():
                session.add(principal)
        except DatabaseConflict:
            # A concurrent first sign-in took the subject or the name.
            existing = _principal_of(session=session, claims=claims)
            if existing is not None:
                return existing
            continue
        audit.record(session=session, actor="system", action="principal.create",
                     target_type="principal", target_id=str(principal.id),
                     detail={"via": "oidc", "name": name, "issuer": claims.issuer,
                             "subject": claims.subject, "role": claims.role.value,
                             "region": claims.region_code})
        log.info("OIDC: new principal %r for subject %.64r", name, claims.subject)
        return principal
    raise Conflict(f"no free principal name for {claims.name_hint[:MAX_NAME_CHARS]!r}")


def _follow_claims(*, session: Session, principal: Principal, claims: Claims,
                   region: Region | None) -> None:
    """Make the principal's role and region those of the token; audit a change."""
    region_id = region.id if region is not None else None
    changes: dict[str, dict[str, str | None]] = {}
    if principal.role != claims.role.value:
        changes["role"] = {"from": principal.role, "to": claims.role.value}
    if principal.region_id != region_id:
        old = session.get(Region, principal.region_id) if principal.region_id else None
        changes["region"] = {"from": old.code if old is not None else None,
                             "to": claims.region_code}
    if not changes:
        return
    principal.role = claims.role.value
    principal.region_id = region_id
    session.flush()
    audit.record(session=session, actor="system", action="principal.claims_changed",
                 target_type="principal", target_id=str(principal.id),
                 detail={"principal": principal.name, "issuer": claims.issuer, **changes})
    log.info("OIDC: principal %r now %s", principal.name, changes)


# --- revocation ---------------------------------------------------------------------------


def revoke_jwt(*, session: Session, jti: str, issuer: str, expires_at: datetime, actor: str,
               principal_id: int | None = None, now: datetime | None = None) -> RevokedJwt:
    """Refuse the token with ``jti`` from now on, until ``expires_at`` (its ``exp``, or
    later: once pruned past it, the token would be accepted again if it were still
    current). Revoking again keeps the later expiry. Audited (``jwt.revoke``); flushes."""
    now = now or datetime.now(UTC)
    jti = jti.strip()
    if not jti or len(jti) > MAX_ID_CHARS:
        raise InvalidInput(f"a jti is 1 to {MAX_ID_CHARS} characters")
    if not issuer.strip():
        raise InvalidInput("the issuer of the token is needed (VIGIL_OIDC_ISSUER)")
    if expires_at.tzinfo is None:
        raise InvalidInput("the expiry needs a UTC offset")
    if expires_at <= now:
        raise InvalidInput(f"the expiry {expires_at.isoformat()} is past: a token past its "
                           "exp is refused anyway (give the token's exp, or later)")
    row = session.get(RevokedJwt, jti)
    if row is not None and row.expires_at >= expires_at:
        return row
    if row is None:
        row = RevokedJwt(jti=jti, issuer=issuer, expires_at=expires_at, revoked_by=principal_id)
        session.add(row)
    else:
        row.expires_at = expires_at
    session.flush()
    audit.record(session=session, actor=actor, principal_id=principal_id, action="jwt.revoke",
                 target_type="jwt", target_id=jti,
                 detail={"issuer": issuer, "expires_at": expires_at.isoformat()})
    return row


def prune_revoked(*, session: Session, now: datetime) -> int:
    """Forget revocations whose tokens have expired (beyond ``REVOCATION_MARGIN``, the
    largest leeway): such a token is refused for its age. Returns the rows deleted."""
    result = session.execute(
        delete(RevokedJwt).where(RevokedJwt.expires_at < now - REVOCATION_MARGIN))
    session.flush()
    return result.rowcount or 0
