"""OIDC bearer JWTs against a local identity provider: a JWKS and a discovery document
served from 127.0.0.1, keys generated per run. Nothing about validation or HTTP is
mocked; the API is pointed at the provider through its settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms
from sqlalchemy import select
from sqlalchemy.orm import Session

from retrieval import limits
from tests import factories
from vigil.auth import oidc
from vigil.catalog.models import AuditEvent, Principal, Region, RevokedJwt
from vigil.errors import ConfigurationError, InvalidInput, Unauthenticated
from vigil.settings import Profile, Settings, production_problems

AUDIENCE = "vigil-api"
REFUSED = "invalid or expired token"


# --- keys and the identity provider ----------------------------------------------------


@dataclass(frozen=True)
class Key:
    kid: str
    alg: str
    private: Any

    def jwk(self, alg: str | None = None) -> dict[str, Any]:
        public = self.private.public_key()
        family = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
        return {**family.to_jwk(public, as_dict=True), "kid": self.kid,
                "alg": alg or self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Keys:
    rsa1: Key
    rsa2: Key
    ec1: Key


@pytest.fixture(scope="module")
def keys() -> Keys:
    def rsa_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(rsa1=Key("rsa-1", "RS256", rsa_key()), rsa2=Key("rsa-2", "RS256", rsa_key()),
                ec1=Key("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files: the certificate is its own
    trust anchor (``SSL_CERT_FILE``, which httpx reads)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "provider.crt", directory / "provider.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class Provider:
    """An OIDC issuer's public face: discovery document and JWKS, on 127.0.0.1, over
    https when given a certificate and its key (``self_signed_certificate``).

    The issuer URL has a path of its own, so that no two tests share Vigil's key
    cache even if the port is reused."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.jwks: list[dict[str, Any]] = []
        self.hits: Counter[str] = Counter()
        self.broken = False  # the JWKS answers HTTP 500
        self.discovery_issuer: str | None = None  # None: the real issuer
        self.jwks_uri: str | None = None  # what discovery names; None: <issuer>/jwks
        self.drip_s: float | None = None  # the JWKS is sent a byte at a time, this apart
        self.dropped = threading.Event()  # a client went away while the JWKS dripped
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.removeprefix(provider.path)
                provider.hits[path] += 1
                if path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.discovery_issuer or provider.issuer,
                            "jwks_uri": provider.jwks_uri or provider.issuer + "/jwks"}
                elif path == "/jwks" and not provider.broken:
                    body = {"keys": provider.jwks}
                else:
                    self.send_error(500 if provider.broken else 404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if path != "/jwks" or provider.drip_s is None:
                    self.wfile.write(data)
                    return
                try:
                    for i in range(len(data)):
                        time.sleep(provider.drip_s)
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                except OSError:  # the client hung up
                    provider.dropped.set()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.path = f"/{uuid.uuid4().hex}"
        self.issuer = f"{scheme}://{self.host}{self.path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, *keys: Key) -> None:
        self.jwks = [k.jwk() for k in keys]

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)

    def claims(self, **overrides: object) -> dict[str, Any]:
        """Claims of a good token; an override of None removes the claim."""
        now = int(datetime.now(UTC).timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": AUDIENCE, "sub": f"sub-{uuid.uuid4().hex}",
            "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex,
            "preferred_username": f"user-{uuid.uuid4().hex[:8]}",
            "vigil_role": "investigator"}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: Key, *, kid: str | None = None, alg: str | None = None,
              **overrides: object) -> str:
        return jwt.encode(self.claims(**overrides), key.private, algorithm=alg or key.alg,
                          headers={"kid": kid or key.kid})


@pytest.fixture
def provider(keys: Keys) -> Iterator[Provider]:
    p = Provider()
    p.publish(keys.rsa1, keys.ec1)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def oidc_settings(settings: Settings, provider: Provider) -> Settings:
    return settings.model_copy(update={"oidc_issuer": provider.issuer,
                                       "oidc_audience": AUDIENCE, "oidc_jwks_url": None})


@pytest.fixture
def region(session: Session) -> Region:
    return factories.region(session)


def _login(session: Session, settings: Settings, token: str) -> Principal:
    return oidc.authenticate(session=session, token=token, settings=settings,
                             now=datetime.now(UTC))


def _refused(session: Session, settings: Settings, token: str, *,
             known: bool = False) -> None:
    """Refused, with the one message; ``known``: as a genuine but stale credential,
    which the failure rate limit does not count."""
    with pytest.raises(Unauthenticated) as info:
        _login(session, settings, token)
    assert str(info.value) == REFUSED
    assert info.value.known_credential is known


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _events(session: Session, action: str, principal: Principal) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(
        AuditEvent.action == action, AuditEvent.target_id == str(principal.id))
        .order_by(AuditEvent.id)))


# --- good tokens ------------------------------------------------------------------------


def test_a_valid_token_gives_a_principal_with_the_claims_role_and_region(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys,
        region: Region) -> None:
    claims = provider.claims(vigil_region=region.code)
    token = jwt.encode(claims, keys.rsa1.private, algorithm="RS256",
                       headers={"kid": keys.rsa1.kid})
    principal = _login(session, oidc_settings, token)
    assert (principal.role, principal.region_id) == ("investigator", region.id)
    assert (principal.oidc_issuer, principal.oidc_subject) == (provider.issuer, claims["sub"])
    assert principal.name == claims["preferred_username"]
    [created] = _events(session, "principal.create", principal)
    assert created.detail["via"] == "oidc" and created.detail["region"] == region.code
    # The same subject again is the same principal, not a new one.
    assert _login(session, oidc_settings, token).id == principal.id
    assert provider.hits["/jwks"] == 1  # cached


@pytest.mark.parametrize("which", ["ES256", "PS256"])
def test_ec_and_rsa_pss_keys_are_accepted(session: Session, oidc_settings: Settings,
                                          provider: Provider, keys: Keys, region: Region,
                                          which: str) -> None:
    if which == "ES256":
        token = provider.token(keys.ec1, vigil_region=region.code)
    else:  # an RSA key the provider publishes for PS256
        provider.jwks = [keys.rsa2.jwk(alg="PS256")]
        token = provider.token(keys.rsa2, alg="PS256", vigil_region=region.code)
    assert _login(session, oidc_settings, token).role == "investigator"


def test_the_issuer_url_can_name_the_jwks_directly(session: Session, oidc_settings: Settings,
                                                   provider: Provider, keys: Keys,
                                                   region: Region) -> None:
    direct = oidc_settings.model_copy(update={"oidc_jwks_url": provider.issuer + "/jwks"})
    _login(session, direct, provider.token(keys.rsa1, vigil_region=region.code))
    assert provider.hits["/.well-known/openid-configuration"] == 0
    assert provider.hits["/jwks"] == 1


def test_an_admin_needs_no_region_and_then_sees_everything(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys) -> None:
    principal = _login(session, oidc_settings, provider.token(keys.rsa1, vigil_role="admin"))
    assert (principal.role, principal.region_id) == ("admin", None)


def test_a_taken_name_is_suffixed(session: Session, oidc_settings: Settings,
                                  provider: Provider, keys: Keys, region: Region,
                                  make_token) -> None:  # noqa: ANN001 - fixture factory
    name = f"alice-{uuid.uuid4().hex[:6]}"
    make_token("admin", name=name)  # a local principal holds the name
    first = _login(session, oidc_settings,
                   provider.token(keys.rsa1, preferred_username=name, vigil_region=region.code))
    second = _login(session, oidc_settings, provider.token(
        keys.rsa1, preferred_username=name, vigil_region=region.code))
    assert (first.name, second.name) == (f"{name}-2", f"{name}-3")
    odd = _login(session, oidc_settings, provider.token(
        keys.rsa1, preferred_username="a\nb c\x00", vigil_region=region.code))
    assert odd.name.startswith("a_b_c_")


# --- refused tokens ------------------------------------------------------------------------


@pytest.mark.parametrize("case", [
    "expired", "wrong audience", "wrong issuer", "issued in the future", "not yet valid",
    "no exp", "no iat", "no sub", "no aud", "no iss", "sub not a string", "exp not a number",
    "exp beyond any float", "exp true"])
def test_tokens_with_bad_claims_are_refused(session: Session, oidc_settings: Settings,
                                            provider: Provider, keys: Keys, region: Region,
                                            case: str) -> None:
    now = int(datetime.now(UTC).timestamp())
    leeway = oidc_settings.oidc_leeway_s
    overrides: dict[str, object] = {
        "expired": {"iat": now - 900, "exp": now - leeway - 1},
        "wrong audience": {"aud": "someone-else"},
        "wrong issuer": {"iss": "http://127.0.0.1:9/other"},
        "issued in the future": {"iat": now + leeway + 60, "exp": now + 900},
        "not yet valid": {"nbf": now + leeway + 60},
        "no exp": {"exp": None}, "no iat": {"iat": None}, "no sub": {"sub": None},
        "no aud": {"aud": None}, "no iss": {"iss": None},
        "sub not a string": {"sub": 12345}, "exp not a number": {"exp": "tomorrow"},
        "exp beyond any float": {"exp": 10**400}, "exp true": {"exp": True},
    }[case]
    # Only a genuine token refused for its times is a known (stale) credential.
    _refused(session, oidc_settings,
             provider.token(keys.rsa1, vigil_region=region.code, **overrides),
             known=case in ("expired", "issued in the future", "not yet valid"))


def test_expiry_allows_the_configured_leeway(session: Session, oidc_settings: Settings,
                                             provider: Provider, keys: Keys,
                                             region: Region) -> None:
    now = int(datetime.now(UTC).timestamp())
    token = provider.token(keys.rsa1, vigil_region=region.code, iat=now - 600, exp=now - 5)
    assert _login(session, oidc_settings, token)
    strict = oidc_settings.model_copy(update={"oidc_leeway_s": 0})
    _refused(session, strict, token, known=True)


def test_a_token_signed_by_a_key_not_in_the_jwks_is_refused(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys,
        region: Region) -> None:
    # The wrong key under a published kid: the signature does not verify.
    _refused(session, oidc_settings,
             provider.token(keys.rsa2, kid=keys.rsa1.kid, vigil_region=region.code))
    # The wrong key under its own kid: unknown even after fetching the JWKS again.
    _refused(session, oidc_settings, provider.token(keys.rsa2, vigil_region=region.code))
    assert provider.hits["/jwks"] == 2


def test_alg_none_and_hs256_with_the_public_key_are_refused(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys,
        region: Region) -> None:
    payload = _b64(json.dumps(provider.claims(vigil_region=region.code)).encode())
    for alg in ("none", "None", ""):
        header = _b64(json.dumps({"alg": alg, "kid": keys.rsa1.kid}).encode())
        _refused(session, oidc_settings, f"{header}.{payload}.")
    # The classic confusion: HMAC keyed with the issuer's public key, which anyone has.
    for secret in (keys.rsa1.public_pem(), json.dumps(keys.rsa1.jwk()).encode()):
        header = _b64(json.dumps({"alg": "HS256", "kid": keys.rsa1.kid}).encode())
        signing_input = f"{header}.{payload}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        _refused(session, oidc_settings, f"{signing_input}.{_b64(mac)}")
    # An RS256 key's kid with an ES256 header: the key fixes the algorithm.
    _refused(session, oidc_settings,
             provider.token(keys.ec1, kid=keys.rsa1.kid, vigil_region=region.code))
    # Only the last token got as far as the keys: a bad alg is refused before any fetch.
    assert provider.hits["/jwks"] == 1


def _signed(key: Key, *, header_alg: str, signing_alg: str, claims: dict[str, Any]) -> str:
    """A JWS whose header names ``header_alg`` but whose signature, by ``key``, is made
    with ``signing_alg``: genuine bytes from the key's holder, under a header that lies."""
    header = _b64(json.dumps({"alg": header_alg, "kid": key.kid, "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = get_default_algorithms()[signing_alg].sign(signing_input.encode(), key.private)
    return f"{signing_input}.{_b64(signature)}"


def test_the_jwks_alg_binds_an_rsa_key_to_one_algorithm(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys,
        region: Region, caplog: pytest.LogCaptureFixture) -> None:
    """RS256 and PS256 use the same RSA keys. Vigil verifies with the algorithm the JWK
    names and refuses a header that names the other one, whichever of them made the
    signature: a token never verifies under an algorithm its issuer did not publish
    for the key. (Not a forgery either way, as only the key's holder can sign; but
    PyJWT before 2.15 verified a PyJWK under its own algorithm whatever the header
    said, so Vigil checks this itself, at step 3.)"""
    provider.jwks = [keys.rsa1.jwk(), keys.rsa2.jwk(alg="PS256")]

    def claims() -> dict[str, Any]:
        return provider.claims(vigil_region=region.code)

    # The controls: each key with its own algorithm is accepted.
    for key, alg in ((keys.rsa1, "RS256"), (keys.rsa2, "PS256")):
        assert _login(session, oidc_settings,
                      _signed(key, header_alg=alg, signing_alg=alg, claims=claims()))
    with caplog.at_level(logging.WARNING, logger="vigil.auth.oidc"):
        for key, header_alg, signing_alg in (
                (keys.rsa1, "PS256", "RS256"),  # a valid RS256 signature, a PS256 header
                (keys.rsa1, "PS256", "PS256"),  # PSS by the RS256 key
                (keys.rsa2, "RS256", "PS256"),  # the reverse
                (keys.rsa2, "RS256", "RS256")):
            _refused(session, oidc_settings, _signed(
                key, header_alg=header_alg, signing_alg=signing_alg, claims=claims()))
    reasons = [r.getMessage() for r in caplog.records]
    assert reasons == [
        "OIDC token refused: algorithm 'PS256' is not 'RS256', that of key id 'rsa-1'",
        "OIDC token refused: algorithm 'PS256' is not 'RS256', that of key id 'rsa-1'",
        "OIDC token refused: algorithm 'RS256' is not 'PS256', that of key id 'rsa-2'",
        "OIDC token refused: algorithm 'RS256' is not 'PS256', that of key id 'rsa-2'"]


def test_an_hmac_key_in_the_jwks_is_never_used(session: Session, oidc_settings: Settings,
                                               provider: Provider, keys: Keys,
                                               region: Region) -> None:
    secret = b"a-shared-secret-of-32-bytes-long!"
    provider.jwks = [keys.rsa1.jwk(), {"kty": "oct", "kid": "hmac", "alg": "HS256",
                                       "k": _b64(secret)}]
    token = jwt.encode(provider.claims(vigil_region=region.code), secret, algorithm="HS256",
                       headers={"kid": "hmac"})
    _refused(session, oidc_settings, token)
    # Nor counted as a signing key: a set of nothing else is no key set for Vigil.
    provider.jwks = provider.jwks[1:]
    with pytest.raises(oidc.IdentityProviderUnavailable, match="no usable signing key"):
        _login(session, oidc_settings, provider.token(keys.rsa1, vigil_region=region.code))


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "x" * 9000])
def test_garbage_is_refused_without_fetching_keys(session: Session, oidc_settings: Settings,
                                                  provider: Provider, token: str) -> None:
    _refused(session, oidc_settings, token)
    assert provider.hits["/jwks"] == 0


def test_refusals_are_logged_without_the_token(session: Session, oidc_settings: Settings,
                                               provider: Provider, keys: Keys, region: Region,
                                               caplog: pytest.LogCaptureFixture) -> None:
    token = provider.token(keys.rsa1, vigil_region=region.code, aud="someone-else")
    with caplog.at_level(logging.INFO, logger="vigil.auth.oidc"):
        _refused(session, oidc_settings, token)
    assert "InvalidAudienceError" in caplog.text
    for part in token.split("."):
        assert part not in caplog.text


@pytest.mark.parametrize("role", ["superuser", "recorder", "", ["admin"], None])
def test_an_unknown_or_missing_role_is_refused(session: Session, oidc_settings: Settings,
                                               provider: Provider, keys: Keys, region: Region,
                                               role: object) -> None:
    _refused(session, oidc_settings,
             provider.token(keys.rsa1, vigil_role=role, vigil_region=region.code))


def test_an_unknown_or_missing_region_is_refused(session: Session, oidc_settings: Settings,
                                                 provider: Provider, keys: Keys) -> None:
    _refused(session, oidc_settings, provider.token(keys.rsa1, vigil_region="no-such-code"))
    _refused(session, oidc_settings, provider.token(keys.rsa1, vigil_region=42))
    # Least privilege: only an admin may come without a region.
    for role in ("investigator", "auditor"):
        _refused(session, oidc_settings, provider.token(keys.rsa1, vigil_role=role))


def test_a_revoked_jti_is_refused_until_pruned_after_expiry(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys,
        region: Region, make_token) -> None:  # noqa: ANN001 - fixture factory
    name = f"adm-{uuid.uuid4().hex[:6]}"
    make_token("admin", name=name)
    admin = session.scalars(select(Principal).where(Principal.name == name)).one()
    claims = provider.claims(vigil_region=region.code)
    token = jwt.encode(claims, keys.rsa1.private, algorithm="RS256",
                       headers={"kid": keys.rsa1.kid})
    principal = _login(session, oidc_settings, token)
    expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    oidc.revoke_jwt(session=session, jti=claims["jti"], issuer=provider.issuer,
                    expires_at=expires_at, actor=admin.name, principal_id=admin.id)
    _refused(session, oidc_settings, token, known=True)
    # The subject's other tokens still work.
    assert _login(session, oidc_settings, provider.token(
        keys.rsa1, sub=claims["sub"], vigil_region=region.code)).id == principal.id
    [event] = session.scalars(select(AuditEvent).where(
        AuditEvent.action == "jwt.revoke", AuditEvent.target_id == claims["jti"]))
    assert (event.actor, event.principal_id) == (admin.name, admin.id)
    assert session.get(RevokedJwt, claims["jti"]).revoked_by == admin.id
    # Kept through expiry and the leeway after it; forgotten once the token is dead.
    assert oidc.prune_revoked(session=session, now=expires_at) == 0
    assert session.get(RevokedJwt, claims["jti"]) is not None
    later = expires_at + oidc.REVOCATION_MARGIN + timedelta(seconds=1)
    assert oidc.prune_revoked(session=session, now=later) >= 1
    session.expire_all()
    assert session.get(RevokedJwt, claims["jti"]) is None


def test_revocation_refuses_nonsense(session: Session) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(InvalidInput, match="is past"):
        oidc.revoke_jwt(session=session, jti="j", issuer="https://idp.example", actor="t",
                        expires_at=past)
    with pytest.raises(InvalidInput, match="jti"):
        oidc.revoke_jwt(session=session, jti=" ", issuer="https://idp.example", actor="t",
                        expires_at=past + timedelta(hours=1))


def test_a_disabled_principal_is_refused(session: Session, oidc_settings: Settings,
                                         provider: Provider, keys: Keys,
                                         region: Region) -> None:
    sub = f"sub-{uuid.uuid4().hex}"
    principal = _login(session, oidc_settings,
                       provider.token(keys.rsa1, sub=sub, vigil_region=region.code))
    principal.disabled_at = datetime.now(UTC)
    session.flush()
    _refused(session, oidc_settings,
             provider.token(keys.rsa1, sub=sub, vigil_region=region.code), known=True)


def test_role_and_region_follow_later_tokens_and_changes_are_audited(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys,
        region: Region) -> None:
    other = factories.region(session)
    sub = f"sub-{uuid.uuid4().hex}"
    principal = _login(session, oidc_settings,
                       provider.token(keys.rsa1, sub=sub, vigil_region=region.code))
    again = _login(session, oidc_settings, provider.token(
        keys.rsa1, sub=sub, vigil_role="auditor", vigil_region=other.code))
    assert again.id == principal.id
    assert (again.role, again.region_id) == ("auditor", other.id)
    _login(session, oidc_settings, provider.token(
        keys.rsa1, sub=sub, vigil_role="admin", vigil_region=None))
    assert (principal.role, principal.region_id) == ("admin", None)
    changes = [e.detail for e in _events(session, "principal.claims_changed", principal)]
    assert changes[0]["role"] == {"from": "investigator", "to": "auditor"}
    assert changes[0]["region"] == {"from": region.code, "to": other.code}
    assert changes[1]["region"] == {"from": other.code, "to": None}
    # The same claims again change nothing and audit nothing.
    _login(session, oidc_settings, provider.token(
        keys.rsa1, sub=sub, vigil_role="admin", vigil_region=None))
    assert len(_events(session, "principal.claims_changed", principal)) == 2


# --- the JWKS: caching, rotation, failures ------------------------------------------------


def test_a_rotated_key_is_fetched_once_when_its_kid_first_appears(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys,
        region: Region) -> None:
    _login(session, oidc_settings, provider.token(keys.rsa1, vigil_region=region.code))
    assert provider.hits["/jwks"] == 1
    provider.publish(keys.rsa1, keys.rsa2)  # the provider rotates in a new key
    _login(session, oidc_settings, provider.token(keys.rsa2, vigil_region=region.code))
    assert provider.hits["/jwks"] == 2
    _login(session, oidc_settings, provider.token(keys.rsa1, vigil_region=region.code))
    # Made-up kids right after cost no more fetches (JWKS_REFRESH_COOLDOWN_S).
    for n in range(3):
        _refused(session, oidc_settings,
                 provider.token(keys.rsa2, kid=f"made-up-{n}", vigil_region=region.code))
    assert provider.hits["/jwks"] == 2


def test_the_key_set_is_refetched_after_its_ttl(session: Session, oidc_settings: Settings,
                                                provider: Provider, keys: Keys,
                                                region: Region) -> None:
    short = oidc_settings.model_copy(update={"oidc_jwks_ttl_s": 0.2})
    _login(session, short, provider.token(keys.rsa1, vigil_region=region.code))
    provider.publish(keys.ec1)  # rsa-1 retired by the provider
    time.sleep(0.3)
    _refused(session, short, provider.token(keys.rsa1, vigil_region=region.code))
    assert provider.hits["/jwks"] == 2


def test_an_unreachable_jwks_is_a_503_naming_its_host(session: Session,
                                                      oidc_settings: Settings,
                                                      provider: Provider, keys: Keys,
                                                      region: Region) -> None:
    token = provider.token(keys.rsa1, vigil_region=region.code)
    provider.stop()
    with pytest.raises(oidc.IdentityProviderUnavailable) as info:
        _login(session, oidc_settings, token)
    assert info.value.http_status == 503
    assert provider.host in str(info.value)
    assert token not in str(info.value)
    assert provider.path not in str(info.value)  # the host only


def test_a_broken_jwks_is_a_503_and_a_wrong_discovery_document_too(
        session: Session, settings: Settings, keys: Keys, region: Region) -> None:
    for fault in ("broken", "no keys", "issuer mismatch"):
        provider = Provider()
        try:
            configured = settings.model_copy(update={"oidc_issuer": provider.issuer,
                                                     "oidc_audience": AUDIENCE})
            if fault == "broken":
                provider.broken = True
            elif fault == "issuer mismatch":
                provider.publish(keys.rsa1)
                provider.discovery_issuer = "https://impostor.example"
            with pytest.raises(oidc.IdentityProviderUnavailable) as info:
                _login(session, configured,
                       provider.token(keys.rsa1, vigil_region=region.code))
            assert provider.host in str(info.value), fault
        finally:
            provider.stop()


def test_a_key_set_that_trickles_in_is_given_up_at_the_deadline(
        session: Session, oidc_settings: Settings, provider: Provider, keys: Keys,
        region: Region, monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.8 s keeps every read within httpx's per-read timeout (1 s here),
    so that the set would take minutes: the request, and the lock that every OIDC
    request waits on, are held no longer than JWKS_TIMEOUT_S (a check between reads
    alone would notice only at the second byte, at 1.6 s)."""
    monkeypatch.setattr(oidc, "JWKS_TIMEOUT_S", 1.0)
    provider.drip_s = 0.8
    token = provider.token(keys.rsa1, vigil_region=region.code)
    started = time.monotonic()
    with pytest.raises(oidc.IdentityProviderUnavailable,
                       match=r"the key set \(JWKS\) at .* did not answer within 1 s") as info:
        _login(session, oidc_settings, token)
    assert time.monotonic() - started < 1.4
    assert provider.host in str(info.value)
    # The lock is free: the next request gets the failure at once (the backoff).
    started = time.monotonic()
    with pytest.raises(oidc.IdentityProviderUnavailable, match="within 1 s"):
        _login(session, oidc_settings, token)
    assert time.monotonic() - started < 0.2
    # And the fetch itself stopped reading: the provider sees the connection closed.
    assert provider.dropped.wait(timeout=10)


@pytest.mark.parametrize("case", ["https issuer", "production"])
def test_discovery_may_not_downgrade_the_key_set_to_plain_http(
        session: Session, settings: Settings, keys: Keys, region: Region, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """The discovery document names the JWKS URL. An https issuer, or any issuer in
    production, must get an https one: keys fetched in clear could be swapped."""
    certificate = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    provider = Provider(tls=certificate if case == "https issuer" else None)
    clear = Provider()  # where a plain-http key set would come from
    try:
        provider.publish(keys.rsa1)
        clear.publish(keys.rsa1)
        configured = settings.model_copy(update={
            "oidc_issuer": provider.issuer, "oidc_audience": AUDIENCE, "oidc_jwks_url": None,
            "profile": Profile.PRODUCTION if case == "production" else settings.profile})
        provider.jwks_uri = clear.issuer + "/jwks"
        with pytest.raises(oidc.IdentityProviderUnavailable,
                           match=r"names a plain http:// jwks_uri") as info:
            _login(session, configured, provider.token(keys.rsa1, vigil_region=region.code))
        assert provider.host in str(info.value) and clear.host in str(info.value)
        assert clear.hits["/jwks"] == 0
        if case == "https issuer":  # an https jwks_uri is fine, as is the issuer's own
            again = configured.model_copy(update={"oidc_jwks_ttl_s": 299.0})  # a new cache
            provider.jwks_uri = None
            assert _login(session, again, provider.token(keys.rsa1, vigil_region=region.code))
            assert provider.hits["/jwks"] == 1
    finally:
        provider.stop()
        clear.stop()


def test_an_issuer_without_an_audience_is_refused(settings: Settings) -> None:
    configured = settings.model_copy(update={"oidc_issuer": "https://idp.example",
                                             "oidc_audience": None})
    with pytest.raises(ConfigurationError, match="VIGIL_OIDC_AUDIENCE"):
        oidc.verify(token="x", settings=configured, now=datetime.now(UTC))
    production = configured.model_copy(update={"profile": Profile.PRODUCTION})
    assert "VIGIL_OIDC_AUDIENCE is not set (VIGIL_OIDC_ISSUER is)" in production_problems(
        production)
    fine = production.model_copy(update={"oidc_audience": AUDIENCE})
    assert not [p for p in production_problems(fine) if "OIDC" in p]
    # Keys fetched in clear could be swapped on the way: production wants https.
    clear = fine.model_copy(update={"oidc_issuer": "http://idp.example",
                                    "oidc_jwks_url": "http://idp.example/jwks"})
    assert [p for p in production_problems(clear) if "OIDC" in p] == [
        "VIGIL_OIDC_ISSUER must be an https:// URL", "VIGIL_OIDC_JWKS_URL must be an https:// URL"]


# --- through the HTTP API and the CLI -----------------------------------------------------


def test_the_api_accepts_oidc_tokens_beside_vigil_tokens(
        client, make_token, session: Session,  # noqa: ANN001 - fixtures
        oidc_settings: Settings, provider: Provider, keys: Keys, region: Region,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vigil.auth.api.get_settings", lambda: oidc_settings)

    def whoami(token: str) -> Any:
        return client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})

    claims = provider.claims(vigil_role="auditor", vigil_region=region.code)
    response = whoami(jwt.encode(claims, keys.rsa1.private, algorithm="RS256",
                                 headers={"kid": keys.rsa1.kid}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["role"], body["region_id"]) == (
        claims["preferred_username"], "auditor", region.id)
    principal = session.get(Principal, body["id"])
    assert [e.detail for e in _events(session, "auth.login", principal)] == [{"via": "oidc"}]
    # Vigil's own tokens still work with an issuer configured.
    assert whoami(make_token("investigator")).status_code == 200
    expired = provider.token(keys.rsa1, vigil_region=region.code, iat=1, exp=2)
    response = whoami(expired)
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "unauthenticated", "message": REFUSED}
    assert response.headers["WWW-Authenticate"] == "Bearer"
    provider.stop()
    token = provider.token(keys.rsa2, vigil_region=region.code)  # an unknown kid: a refetch
    response = whoami(token)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "identity_provider_unavailable"
    assert provider.host in error["message"] and token not in response.text


def test_stale_genuine_jwts_do_not_lock_out_an_address_and_forged_ones_do(
        client, session: Session, settings: Settings,  # noqa: ANN001 - fixture
        oidc_settings: Settings, provider: Provider, keys: Keys, region: Region,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Everyone behind one NAT sends their expired token once before refreshing: no
    lock-out. Values whose signature does not verify are guesses, and lock it out."""
    monkeypatch.setattr("vigil.auth.api.get_settings", lambda: oidc_settings)
    monkeypatch.setattr(settings, "auth_failures_per_minute", 3)  # read by the limits
    client.app.state.limiter = limits.Limiter("memory://", namespace=f"t-{uuid.uuid4().hex}")

    def whoami(token: str) -> int:
        return client.get("/api/v1/whoami",
                          headers={"Authorization": f"Bearer {token}"}).status_code

    now = int(datetime.now(UTC).timestamp())
    for _ in range(10):  # expired, each a different person's
        assert whoami(provider.token(keys.rsa1, vigil_region=region.code,
                                     iat=now - 900, exp=now - 600)) == 401
    assert whoami(provider.token(keys.rsa1, vigil_region=region.code,
                                 nbf=now + 600)) == 401
    revoked = provider.claims(vigil_region=region.code)
    oidc.revoke_jwt(session=session, jti=revoked["jti"], issuer=provider.issuer,
                    expires_at=datetime.fromtimestamp(revoked["exp"], UTC), actor="test")
    for _ in range(2):
        assert whoami(jwt.encode(revoked, keys.rsa1.private, algorithm="RS256",
                                 headers={"kid": keys.rsa1.kid})) == 401
    sub = f"sub-{uuid.uuid4().hex}"
    assert whoami(provider.token(keys.rsa1, sub=sub, vigil_region=region.code)) == 200
    session.scalars(select(Principal).where(Principal.oidc_subject == sub)).one() \
        .disabled_at = datetime.now(UTC)
    session.flush()
    assert whoami(provider.token(keys.rsa1, sub=sub, vigil_region=region.code)) == 401
    assert whoami(provider.token(keys.rsa1, vigil_region=region.code)) == 200
    # Forged: expired too, but signed by a key that is not the issuer's.
    for _ in range(3):
        assert whoami(provider.token(keys.rsa2, kid=keys.rsa1.kid, vigil_region=region.code,
                                     iat=now - 900, exp=now - 600)) == 401
    assert whoami(provider.token(keys.rsa1, vigil_region=region.code)) == 429


def test_vigil_jwt_revoke(session: Session, provider: Provider, keys: Keys) -> None:
    from typer.testing import CliRunner

    from ops.cli import app
    from vigil.auth import service as auth_service
    from vigil.db import session_scope

    name = f"admin-{uuid.uuid4().hex[:6]}"
    with session_scope() as s:
        auth_service.ensure_principal(session=s, name=name,
                                      role=auth_service.parse_role("admin"))
    jti = f"cli-{uuid.uuid4().hex}"
    expires = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    cli = CliRunner()
    result = cli.invoke(app, ["jwt", "revoke", jti, "--expires", expires.isoformat(),
                              "--issuer", provider.issuer, "--as", name])
    assert result.exit_code == 0, result.output
    with session_scope() as s:
        row = s.get(RevokedJwt, jti)
        assert row is not None and row.expires_at == expires
        assert row.issuer == provider.issuer
    result = cli.invoke(app, ["jwt", "revoke", "x", "--expires", "2030-01-01T00:00:00",
                              "--issuer", provider.issuer, "--as", name])
    assert result.exit_code != 0  # no offset: refused
