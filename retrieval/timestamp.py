"""RFC 3161 timestamps of evidence packages (docs/design/package.md).

When a timestamp authority (TSA) is configured (``VIGIL_TSA_URL``), the package
builder asks it to timestamp the tag manifest, and stores its reply in the package as
``signature/tagmanifest-sha256.txt.tsr``: a third party's signed statement that the
tag manifest (so every file of the package) existed at the TSA's ``genTime``.

The file holds the TSA's whole ``TimeStampResp`` (DER), as received: what
``openssl ts -reply`` writes and ``openssl ts -verify -in`` reads by default (a bare
token would need ``-token_in``). ``token_imprint`` also reads a bare token.

``request_token`` (the only I/O here):

1. Build a ``TimeStampReq``: version 1, the SHA-256 message imprint of the data, a
   random 64-bit nonce, ``certReq`` true (the TSA must include its certificate, which
   ``openssl ts -verify`` needs), no policy (the TSA's default).
2. POST it (``Content-Type: application/timestamp-query``), no redirects, reading at
   most ``MAX_RESPONSE_BYTES``.
3. The answer must be HTTP 200 with ``Content-Type: application/timestamp-reply``.
4. It must parse (strict DER framing) as a ``TimeStampResp`` whose status is granted
   (0) or granted with modifications (1), holding a signed token with at least one
   certificate, whose ``TSTInfo`` has the SHA-256 imprint and the nonce sent.
5. Return the response's bytes.

Errors (the export task retries ``StorageError``, and fails the export on an
``IntegrityError``: retrieval/tasks.py, retrieval/exports.py):

* ``TimestampUnavailable`` (a ``StorageError``): the TSA could not be reached, timed
  out, answered 408, 429 or 5xx, or said "waiting". Worth trying again later.
* ``TimestampError`` (an ``IntegrityError``): the TSA answered, but not with a valid
  timestamp of what was sent: another HTTP status, content type or body, a rejection,
  a wrong imprint or nonce. Trying again will not help; the export fails closed,
  never packaged without the timestamp that was configured.

URLs may carry credentials (``https://user:pass@tsa.example/``); messages show them
through ``vigil.redact.redact_url`` only.

Caveats:

* The TSA's signature is not verified here: that needs the TSA's CA certificate,
  which is the auditor's to choose (``openssl ts -verify -CAfile``). A TSA that
  answers with another TSA's token, or a forged one, is caught only there.
* ``timeout_s`` bounds each network operation (connect, each read, each write), not
  the whole exchange.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import httpx
from asn1crypto import cms, core, parser, tsp

from vigil.errors import IntegrityError, StorageError
from vigil.redact import REDACTED, redact_url

log = logging.getLogger("vigil.timestamp")

QUERY_CONTENT_TYPE: Final = "application/timestamp-query"
REPLY_CONTENT_TYPE: Final = "application/timestamp-reply"
# A reply is a token with the TSA's certificate chain: a few KiB. Anything beyond
# 1 MiB is not a timestamp, and is not read into memory.
MAX_RESPONSE_BYTES: Final = 1 << 20
NONCE_BITS: Final = 64
# HTTP statuses that say "not now" rather than "not this request".
TRANSIENT_HTTP: Final = frozenset({408, 429, 500, 502, 503, 504})
GRANTED: Final = frozenset({"granted", "granted_with_mods"})
# DER tags of the first element inside the outer SEQUENCE: a TimeStampResp starts
# with its status (a SEQUENCE), a bare token (ContentInfo) with its content type (OID).
_TAG_SEQUENCE: Final = 16
_TAG_OID: Final = 6
# What a malformed or hostile DER blob makes asn1crypto raise, lazily, on access.
_PARSE_ERRORS: Final = (ValueError, TypeError, KeyError, IndexError, OverflowError,
                        RecursionError)


class TimeStampResp(core.Sequence):
    """RFC 3161 section 2.4.2: the token is OPTIONAL (a refusal has none), which
    asn1crypto 1.5.1's ``tsp.TimeStampResp`` does not allow for."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class TimestampError(IntegrityError):
    """The TSA answered, but not with a valid timestamp of what was sent; or a stored
    timestamp does not parse as one."""

    code = "timestamp_error"


class TimestampUnavailable(StorageError):
    """The TSA could not give a timestamp now (unreachable, overloaded, waiting)."""

    code = "timestamp_unavailable"


@dataclass(frozen=True)
class TimestampInfo:
    """What a timestamp says, as read from its ``TSTInfo``."""

    imprint: bytes  # the hashed message: SHA-256 of the timestamped bytes
    gen_time: datetime  # UTC
    serial: int
    policy: str  # dotted OID
    nonce: int | None
    tsa: str | None  # the TSA's name, when the token gives one
    is_response: bool  # a TimeStampResp (True) or a bare token (False)


# --- requesting ---------------------------------------------------------------------


def request_token(data: bytes, *, url: str, timeout_s: float = 30.0) -> bytes:
    """The DER ``TimeStampResp`` of the TSA at ``url`` over ``data`` (module doc).

    Raises ``TimestampUnavailable`` when the TSA cannot answer now and
    ``TimestampError`` when its answer is not a valid timestamp of ``data``.
    """
    where = redact_url(url)
    digest = hashlib.sha256(data).digest()
    nonce = secrets.randbits(NONCE_BITS)
    request = tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": digest},
        "nonce": nonce,
        "cert_req": True,
    }).dump()

    body = _post(url, request, where=where, timeout_s=timeout_s)
    info = _parse(body, where=f"the reply of the TSA at {where}", requesting=True)
    if info.imprint != digest:
        raise TimestampError(f"the TSA at {where} timestamped {info.imprint.hex()}, not the "
                             f"SHA-256 {digest.hex()} that was sent")
    if info.nonce != nonce:
        raise TimestampError(f"the TSA at {where} answered with nonce {info.nonce}, not the "
                             f"{nonce} that was sent (a replayed or misrouted reply)")
    log.info("timestamped %s by the TSA at %s: genTime %s, serial %d", digest.hex(), where,
             info.gen_time.isoformat(), info.serial)
    return body


def _post(url: str, request: bytes, *, where: str, timeout_s: float) -> bytes:
    headers = {"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE}
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client, \
                client.stream("POST", url, content=request, headers=headers) as response:
            status = response.status_code
            if status in TRANSIENT_HTTP:
                raise TimestampUnavailable(f"the TSA at {where} answered HTTP {status}; "
                                           "trying again later")
            if status != 200:
                raise TimestampError(f"the TSA at {where} answered HTTP {status}, not 200 "
                                     "(check VIGIL_TSA_URL and its credentials)")
            content_type = response.headers.get("content-type", "")
            if content_type.split(";", 1)[0].strip().lower() != REPLY_CONTENT_TYPE:
                raise TimestampError(f"the TSA at {where} answered with Content-Type "
                                     f"{content_type[:100]!r}, not {REPLY_CONTENT_TYPE} "
                                     "(is VIGIL_TSA_URL a timestamp authority?)")
            body = bytearray()
            for block in response.iter_bytes():
                body += block
                if len(body) > MAX_RESPONSE_BYTES:
                    raise TimestampError(f"the TSA at {where} answered with more than "
                                         f"{MAX_RESPONSE_BYTES} bytes: not a timestamp")
            return bytes(body)
    except httpx.UnsupportedProtocol:
        raise TimestampError(f"the TSA URL {where} is not an http:// or https:// URL "
                             "(VIGIL_TSA_URL)") from None
    except httpx.TransportError as exc:
        # Connection refused, DNS, TLS, timeouts, a dropped connection: the message is
        # httpx's (no URL in it), scrubbed all the same.
        raise TimestampUnavailable(f"the TSA at {where} could not be reached: "
                                   f"{type(exc).__name__}: {_scrub(str(exc), url)}") from None
    except httpx.RequestError as exc:  # the body's encoding, say: not a TSA's answer
        raise TimestampError(f"the TSA at {where} answered unreadably: "
                             f"{type(exc).__name__}: {_scrub(str(exc), url)}") from None
    except httpx.InvalidURL as exc:
        raise TimestampError(f"the TSA URL {where} is not a valid URL: "
                             f"{_scrub(str(exc), url)} (VIGIL_TSA_URL)") from None


def _scrub(text: str, url: str) -> str:
    """``text`` without ``url`` or the password in it."""
    text = text.replace(url, redact_url(url))
    password = urlsplit(url).password
    return text.replace(password, REDACTED) if password else text


# --- reading ------------------------------------------------------------------------


def token_imprint(tsr: bytes) -> tuple[bytes, datetime]:
    """(the SHA-256 message imprint, genTime in UTC) of a stored timestamp: a DER
    ``TimeStampResp`` with a granted status, or a bare token. Raises
    ``TimestampError`` if it is neither, or its imprint is not SHA-256."""
    info = read_timestamp(tsr)
    return info.imprint, info.gen_time


def read_timestamp(tsr: bytes) -> TimestampInfo:
    """Everything ``token_imprint`` checks, and what the token says. Does not verify
    the TSA's signature (module caveats)."""
    return _parse(tsr, where="the timestamp", requesting=False)


def _parse(der: bytes, *, where: str, requesting: bool) -> TimestampInfo:
    """``requesting``: a TSA's fresh reply (a response with a certificate is required;
    "waiting" is ``TimestampUnavailable``), not a stored one (where every problem is a
    ``TimestampError``)."""
    try:
        return _parse_unchecked(der, where=where, requesting=requesting)
    except TimestampError:
        raise
    except _PARSE_ERRORS as exc:
        raise TimestampError(f"{where} is not a DER RFC 3161 timestamp: "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _parse_unchecked(der: bytes, *, where: str, requesting: bool) -> TimestampInfo:
    # The first element inside the outer SEQUENCE tells a response from a bare token.
    outer = parser.parse(der, strict=True)
    if outer[0] != 0 or outer[2] != _TAG_SEQUENCE:
        raise TimestampError(f"{where} is not a DER SEQUENCE")
    first_tag = parser.parse(outer[4])[2] if outer[4] else None
    if first_tag == _TAG_SEQUENCE:
        response = TimeStampResp.load(der, strict=True)
        status = response["status"]
        if status["status"].native not in GRANTED:
            _raise_status(status, where=where, requesting=requesting)
        token = response["time_stamp_token"]
        if not isinstance(token, cms.ContentInfo):
            raise TimestampError(f"{where} is granted but holds no timestamp token")
        is_response = True
    elif first_tag == _TAG_OID and not requesting:
        token = cms.ContentInfo.load(der, strict=True)
        is_response = False
    else:
        raise TimestampError(f"{where} is not a TimeStampResp"
                             + ("" if requesting else " or a timestamp token"))

    if token["content_type"].native != "signed_data":
        raise TimestampError(f"{where}: the token is {token['content_type'].native!r}, "
                             "not CMS SignedData")
    signed = token["content"]
    encap = signed["encap_content_info"]
    if encap["content_type"].native != "tst_info" or \
            not isinstance(encap["content"], core.ParsableOctetString):
        raise TimestampError(f"{where}: the token's content is "
                             f"{encap['content_type'].native!r}, not a TSTInfo")
    if requesting and not len(signed["certificates"] or []):
        raise TimestampError(f"{where}: the token holds no certificate although the "
                             "request asked for the TSA's (certReq)")
    tst = encap["content"].parsed
    if not isinstance(tst, tsp.TSTInfo):
        raise TimestampError(f"{where}: the token's content is not a TSTInfo")
    imprint = tst["message_imprint"]
    algorithm = imprint["hash_algorithm"]["algorithm"].native
    if algorithm != "sha256":
        raise TimestampError(f"{where}: the imprint is a {algorithm} hash, not SHA-256")
    hashed = imprint["hashed_message"].native
    if len(hashed) != hashlib.sha256().digest_size:
        raise TimestampError(f"{where}: the imprint is {len(hashed)} bytes, not a SHA-256")
    gen_time = tst["gen_time"].native
    if not isinstance(gen_time, datetime) or gen_time.tzinfo is None:
        raise TimestampError(f"{where}: genTime is not a UTC time")
    tsa = tst["tsa"]
    return TimestampInfo(
        imprint=hashed, gen_time=gen_time.astimezone(UTC), serial=tst["serial_number"].native,
        policy=tst["policy"].dotted, nonce=tst["nonce"].native,
        tsa=None if isinstance(tsa, core.Void) else _name(tsa), is_response=is_response)


def _raise_status(status: tsp.PKIStatusInfo, *, where: str, requesting: bool) -> None:
    name = status["status"].native
    text = status["status_string"].native  # None when absent (a Void)
    failures = status["fail_info"].native
    detail = "".join([f"; failure: {', '.join(sorted(failures))}" if failures else "",
                      f"; the TSA says: {' '.join(text)[:300]!r}" if text else ""])
    if name == "waiting" and requesting:
        raise TimestampUnavailable(f"{where}: the TSA says 'waiting' (no timestamp yet)"
                                   + detail)
    raise TimestampError(f"{where}: status {name!r}, not granted{detail}")


def _name(general_name: core.Asn1Value) -> str:
    """A GeneralName for people: a directory name as its RFC 4514 string."""
    chosen = getattr(general_name, "chosen", general_name)
    human = getattr(chosen, "human_friendly", None)
    return str(human if human is not None else chosen.native)
