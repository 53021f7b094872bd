"""RFC 3161 timestamps (retrieval/timestamp.py), against a real TSA: OpenSSL's
``openssl ts -reply`` behind a small HTTP server on 127.0.0.1, with a CA and a TSA
certificate made here. What the client accepts, ``openssl ts -verify`` accepts too;
and the verifier's ``signature.timestamp`` check catches a timestamp of other bytes."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import subprocess
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from retrieval import package, timestamp, verify
from retrieval.timestamp import TimestampError, TimestampUnavailable, request_token
from retrieval.verify import render, verify_package
from tests import packages
from tests.packages import BAG, Built
from vigil.errors import IntegrityError, StorageError

pytestmark = pytest.mark.slow  # runs OpenSSL as processes, builds real packages

OPENSSL = shutil.which("openssl")
TSA_POLICY = "1.3.6.1.4.1.99999.1"
DATA = b"the bytes the TSA timestamps\n"

TSA_CONFIG = """\
[ tsa ]
default_tsa = vigil_test_tsa

[ vigil_test_tsa ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/ca.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = {policy}
digests = sha256, sha384, sha512
accuracy = secs:1
clock_precision_digits = 0
ordering = no
tsa_name = yes
ess_cert_id_chain = yes
ess_cert_id_alg = sha256
"""


# --- a real TSA ---------------------------------------------------------------------


@dataclass(frozen=True)
class Tsa:
    url: str  # the real TSA
    base: str  # http://127.0.0.1:<port>, for the misbehaving paths
    ca_pem: Path
    config: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigil tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tsa_files(folder: Path) -> None:
    """ca.pem, tsa.pem (extendedKeyUsage timeStamping, critical), tsa.key, serial and
    the ``openssl ts`` configuration, in ``folder``."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Vigil test TSA CA"))
          .issuer_name(_name("Vigil test TSA CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = (x509.CertificateBuilder().subject_name(_name("Vigil test TSA"))
           .issuer_name(ca.subject).public_key(tsa_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
           .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
           .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                        key_encipherment=False, data_encipherment=False,
                                        key_agreement=False, key_cert_sign=False,
                                        crl_sign=False, encipher_only=False,
                                        decipher_only=False), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                          critical=True)
           .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()),
                          critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
               ca_key.public_key()), critical=False)
           .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "tsa.pem").write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    (folder / "tsa.key").write_bytes(tsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (folder / "serial").write_text("01\n")
    (folder / "tsa.cnf").write_text(TSA_CONFIG.format(dir=folder, policy=TSA_POLICY))


class _Handler(http.server.BaseHTTPRequestHandler):
    """POST /tsa: OpenSSL's reply. The other paths misbehave as their names say."""

    server: _TsaServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.queries.append((self.path, self.headers.get("Content-Type"), query))
        path = self.path.split("?", 1)[0]
        if path == "/tsa":
            self._reply(200, timestamp.REPLY_CONTENT_TYPE, self.server.openssl_reply(query))
        elif path == "/garbage":
            self._reply(200, timestamp.REPLY_CONTENT_TYPE, b"\x30\x03garbage, not DER")
        elif path == "/status-500":
            self._reply(500, "text/plain", b"internal error")
        elif path == "/html":
            self._reply(200, "text/html", b"<html>a web page</html>")
        elif path == "/canned":
            self._reply(200, timestamp.REPLY_CONTENT_TYPE, self.server.canned)
        else:
            self._reply(404, "text/plain", b"not found")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _TsaServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder = folder
        self.queries: list[tuple[str, str | None, bytes]] = []
        self.canned = b""
        self._lock = threading.Lock()  # one `openssl ts -reply` at a time: the serial file

    def openssl_reply(self, query: bytes) -> bytes:
        with self._lock, tempfile.TemporaryDirectory(dir=self.folder) as tmp:
            q, r = Path(tmp) / "query.tsq", Path(tmp) / "reply.tsr"
            q.write_bytes(query)
            subprocess.run([OPENSSL, "ts", "-reply", "-config", str(self.folder / "tsa.cnf"),
                            "-queryfile", str(q), "-out", str(r)],
                           check=True, capture_output=True, timeout=30)
            return r.read_bytes()


@pytest.fixture(scope="module")
def tsa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_TsaServer]:
    assert OPENSSL is not None, "the openssl command is needed"
    folder = tmp_path_factory.mktemp("tsa")
    make_tsa_files(folder)
    server = _TsaServer(folder)
    thread = threading.Thread(target=server.serve_forever, name="test-tsa", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def tsa(tsa_server: _TsaServer) -> Tsa:
    host, port = tsa_server.server_address[:2]
    base = f"http://{host}:{port}"
    return Tsa(url=f"{base}/tsa", base=base, ca_pem=tsa_server.folder / "ca.pem",
               config=tsa_server.folder / "tsa.cnf")


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def openssl_verify(data: Path, tsr: Path, ca: Path, *extra: str,
                   cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return run([OPENSSL, "ts", "-verify", "-data", str(data), "-in", str(tsr), *extra,
                "-CAfile", str(ca)], cwd=cwd)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- request_token ------------------------------------------------------------------


def test_a_token_from_a_real_tsa_verifies_with_openssl(tsa: Tsa, tsa_server: _TsaServer,
                                                       tmp_path: Path) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    tsr = request_token(DATA, url=tsa.url, timeout_s=10)

    # What was sent: a TimeStampReq with certReq, a nonce and the SHA-256 imprint.
    path, content_type, query = tsa_server.queries[-1]
    assert (path, content_type) == ("/tsa", "application/timestamp-query")
    sent = tsp.TimeStampReq.load(query)
    assert sent["cert_req"].native is True and sent["nonce"].native is not None
    assert sent["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha256"

    # What came back: a granted TimeStampResp over the data's SHA-256.
    response = tsp.TimeStampResp.load(tsr)
    assert response["status"]["status"].native == "granted"
    imprint, gen_time = timestamp.token_imprint(tsr)
    assert imprint == hashlib.sha256(DATA).digest()
    assert before <= gen_time <= datetime.now(UTC) + timedelta(seconds=1)
    info = timestamp.read_timestamp(tsr)
    assert info.policy == TSA_POLICY and info.nonce == sent["nonce"].native
    assert info.is_response and info.tsa is not None and "Vigil test TSA" in info.tsa

    # And OpenSSL agrees, from the TSA's CA certificate alone.
    (tmp_path / "data").write_bytes(DATA)
    (tmp_path / "reply.tsr").write_bytes(tsr)
    result = openssl_verify(tmp_path / "data", tmp_path / "reply.tsr", tsa.ca_pem)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification: OK" in result.stdout
    # ... and refuses the token for other bytes.
    (tmp_path / "other").write_bytes(DATA + b"x")
    assert openssl_verify(tmp_path / "other", tmp_path / "reply.tsr",
                          tsa.ca_pem).returncode != 0


def test_each_request_has_its_own_nonce(tsa: Tsa) -> None:
    first = timestamp.read_timestamp(request_token(DATA, url=tsa.url))
    second = timestamp.read_timestamp(request_token(DATA, url=tsa.url))
    assert first.nonce != second.nonce and first.serial != second.serial


def test_garbage_from_the_tsa_is_a_timestamp_error(tsa: Tsa) -> None:
    with pytest.raises(TimestampError, match=r"the TSA at http://127\.0\.0\.1:\d+/garbage "
                                             "is not a DER RFC 3161 timestamp"):
        request_token(DATA, url=f"{tsa.base}/garbage")


def test_a_web_page_is_not_a_timestamp(tsa: Tsa) -> None:
    with pytest.raises(TimestampError, match="Content-Type 'text/html'"):
        request_token(DATA, url=f"{tsa.base}/html")


def test_a_wrong_path_is_not_retried(tsa: Tsa) -> None:
    with pytest.raises(TimestampError, match="HTTP 404") as caught:
        request_token(DATA, url=f"{tsa.base}/nowhere")
    assert not isinstance(caught.value, StorageError)


def test_http_500_is_transient(tsa: Tsa) -> None:
    with pytest.raises(TimestampUnavailable, match="HTTP 500") as caught:
        request_token(DATA, url=f"{tsa.base}/status-500")
    # The export task retries StorageError (retrieval/tasks.py) and fails the export
    # on IntegrityError: a transient failure must be the one and not the other.
    assert isinstance(caught.value, StorageError)
    assert not isinstance(caught.value, IntegrityError)


def test_an_unreachable_tsa_is_transient_and_its_password_is_not_shown() -> None:
    url = f"http://stamper:s3cret-pa55@127.0.0.1:{free_port()}/tsa?token=t0ken-value"
    with pytest.raises(TimestampUnavailable, match="could not be reached") as caught:
        request_token(DATA, url=url, timeout_s=5)
    message = str(caught.value)
    assert "s3cret-pa55" not in message and "t0ken-value" not in message
    assert "stamper:***@127.0.0.1" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_not_an_http_url_is_a_configuration_mistake() -> None:
    with pytest.raises(TimestampError, match="not an http"):
        request_token(DATA, url="ftp://tsa.example/")


def test_a_replayed_reply_is_refused(tsa: Tsa, tsa_server: _TsaServer) -> None:
    """A valid reply for the same data, but to another request (its nonce)."""
    tsa_server.canned = request_token(DATA, url=tsa.url)
    with pytest.raises(TimestampError, match="nonce"):
        request_token(DATA, url=f"{tsa.base}/canned")


def test_a_reply_for_other_data_is_refused(tsa: Tsa, tsa_server: _TsaServer) -> None:
    tsa_server.canned = request_token(b"other data", url=tsa.url)
    with pytest.raises(TimestampError, match="timestamped .*not the SHA-256"):
        request_token(DATA, url=f"{tsa.base}/canned")


@pytest.mark.parametrize(("status", "error", "match"), [
    ("rejection", TimestampError, "status 'rejection', not granted; failure: bad_alg; "
                                  "the TSA says: 'no such algorithm'"),
    ("waiting", TimestampUnavailable, "waiting"),
    ("revocation_notification", TimestampError, "revocation_notification"),
])
def test_a_status_other_than_granted_is_refused(tsa: Tsa, tsa_server: _TsaServer,
                                                status: str, error: type[Exception],
                                                match: str) -> None:
    tsa_server.canned = timestamp.TimeStampResp({"status": {
        "status": status, "status_string": ["no such algorithm"],
        "fail_info": {"bad_alg"}}}).dump()
    with pytest.raises(error, match=match):
        request_token(DATA, url=f"{tsa.base}/canned")


def test_a_bare_token_is_read_too(tsa: Tsa) -> None:
    response = tsp.TimeStampResp.load(request_token(DATA, url=tsa.url))
    token = response["time_stamp_token"].dump()
    imprint, _ = timestamp.token_imprint(token)
    assert imprint == hashlib.sha256(DATA).digest()
    assert not timestamp.read_timestamp(token).is_response


GRANTED_WITHOUT_TOKEN = timestamp.TimeStampResp({"status": {"status": "granted"}}).dump()


@pytest.mark.parametrize("data", [b"", b"\x30\x00", b"\x04\x01x", b"\x30\x80\x00\x00",
                                  GRANTED_WITHOUT_TOKEN])
def test_what_is_not_a_timestamp_is_a_timestamp_error(data: bytes) -> None:
    with pytest.raises(TimestampError):
        timestamp.token_imprint(data)


def test_no_byte_of_a_reply_makes_the_reader_crash(tsa: Tsa) -> None:
    """Every single-bit change either still reads or is a TimestampError."""
    tsr = request_token(DATA, url=tsa.url)
    for offset in range(len(tsr)):
        changed = tsr[:offset] + bytes([tsr[offset] ^ 0x01]) + tsr[offset + 1:]
        try:
            timestamp.read_timestamp(changed)
        except TimestampError:
            pass


# --- in a package -------------------------------------------------------------------


@pytest.fixture(scope="module")
def stamped(tsa: Tsa, tmp_path_factory: pytest.TempPathFactory) -> Built:
    return packages.build(tmp_path_factory.mktemp("stamped"),
                          timestamp_token=lambda b: request_token(b, url=tsa.url))


def replace_member(built: Built, out: Path, name: str, data: bytes) -> Path:
    """A copy of the package with the member ``name`` (path inside the bag) replaced."""
    with zipfile.ZipFile(built.path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = data if info.filename == f"{BAG}/{name}" else src.read(info)
            dst.writestr(info, content)
    return out


def test_a_stamped_package_verifies_and_names_the_gen_time(stamped: Built) -> None:
    with zipfile.ZipFile(stamped.path) as zf:
        tsr = zf.read(f"{BAG}/{package.TIMESTAMP_TSR}")
        tagmanifest = zf.read(f"{BAG}/{package.TAGMANIFEST}")
    imprint, gen_time = timestamp.token_imprint(tsr)
    assert imprint == hashlib.sha256(tagmanifest).digest()
    report = verify_package(stamped.path, trusted_keys=[stamped.signing_key.public_key()])
    assert report.ok, render(report)
    assert report.checks["signature.timestamp"] == 1
    notes = [n for n in report.notes if n.startswith("signature.timestamp")]
    assert len(notes) == 1 and gen_time.isoformat() in notes[0], report.notes
    assert "openssl ts -verify -data tagmanifest-sha256.txt -in " \
           "signature/tagmanifest-sha256.txt.tsr -CAfile TSA-CA.pem" in notes[0]


def test_the_auditors_openssl_command_verifies_the_stamped_bag(stamped: Built, tsa: Tsa,
                                                               tmp_path: Path) -> None:
    """README "For auditors": the command as written, in the extracted bag."""
    with zipfile.ZipFile(stamped.path) as zf:
        zf.extractall(tmp_path)
    bag = tmp_path / BAG
    shutil.copy(tsa.ca_pem, bag / "TSA-CA.pem")
    result = openssl_verify(Path("tagmanifest-sha256.txt"),
                            Path("signature/tagmanifest-sha256.txt.tsr"),
                            Path("TSA-CA.pem"), cwd=bag)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_timestamp_of_other_bytes_fails(stamped: Built, tsa: Tsa, tmp_path: Path) -> None:
    other = request_token(b"some other tag manifest\n", url=tsa.url)
    changed = replace_member(stamped, tmp_path / "other.zip", package.TIMESTAMP_TSR, other)
    report = verify_package(changed, restitch=False)
    assert [(f.check, f.file) for f in report.failures] == \
        [("signature.timestamp", package.TIMESTAMP_TSR)], render(report)
    assert "timestamp of other bytes" in report.failures[0].message
    assert report.checks["signature.package"] == 1  # the rest of the package is intact


@pytest.mark.parametrize("data", [
    b"not a timestamp",
    timestamp.TimeStampResp({"status": {"status": "rejection", "fail_info": {"bad_alg"}}}).dump(),
    timestamp.TimeStampResp({"status": {"status": "waiting"}}).dump(),
    GRANTED_WITHOUT_TOKEN,
])
def test_a_timestamp_that_does_not_parse_or_was_refused_fails(stamped: Built, tmp_path: Path,
                                                              data: bytes) -> None:
    changed = replace_member(stamped, tmp_path / "bad.zip", package.TIMESTAMP_TSR, data)
    report = verify_package(changed, restitch=False)
    assert [(f.check, f.file) for f in report.failures] == \
        [("signature.timestamp", package.TIMESTAMP_TSR)], render(report)


def test_an_oversized_timestamp_is_not_parsed(stamped: Built, tmp_path: Path) -> None:
    changed = replace_member(stamped, tmp_path / "big.zip", package.TIMESTAMP_TSR,
                             b"\x30" * (verify.MAX_TIMESTAMP_BYTES + 1))
    report = verify_package(changed, restitch=False)
    assert [(f.check, f.file) for f in report.failures] == \
        [("signature.timestamp", package.TIMESTAMP_TSR)], render(report)


def test_a_package_without_a_timestamp_has_no_timestamp_check(tmp_path: Path) -> None:
    built = packages.build(tmp_path)
    report = verify_package(built.path, restitch=False)
    assert report.ok and report.checks["signature.timestamp"] == 0
    assert not any("timestamp" in note for note in report.notes)


def test_the_check_list_names_the_timestamp_check() -> None:
    assert "signature.timestamp" in verify.CHECKS
    doc = (Path(__file__).parent.parent / "docs" / "design" / "package.md").read_text()
    table = {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")}
    assert table == set(verify.CHECKS)
