"""The standard tools alone agree with ``vigil verify``: an auditor with bagit.py,
sha256sum, OpenSSL 3 and ffprobe, and no Vigil, checks a package by running exactly
these commands on the extracted bag (docs/design/package.md, "Objective")."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import packages
from tests.packages import BAG, Built

pytestmark = pytest.mark.slow  # runs the auditor's tools as processes

BAGIT = Path(sys.executable).parent / "bagit.py"  # the script the bagit wheel installs
OPENSSL = shutil.which("openssl")
FFPROBE = "/usr/bin/ffprobe"
SIGNATURE_CHECK = ["pkeyutl", "-verify", "-pubin", "-inkey", "signature/package-signing-key.pem",
                   "-rawin", "-in", "tagmanifest-sha256.txt",
                   "-sigfile", "signature/tagmanifest-sha256.txt.sig"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return packages.build(tmp_path_factory.mktemp("package"))


@pytest.fixture
def bag(built: Built, tmp_path: Path) -> Path:
    """The package extracted as an auditor would (Python's zipfile)."""
    with zipfile.ZipFile(built.path) as zf:
        zf.extractall(tmp_path)
    return tmp_path / BAG


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_bagit_validates_the_bag_with_its_signature_directory(bag: Path) -> None:
    result = run([str(BAGIT), "--validate", str(bag)])
    assert result.returncode == 0, result.stderr
    assert f"{bag} is valid" in result.stderr
    # No complaint about signature/ (outside both manifests) or anything else.
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, result.stderr


def test_sha256sum_checks_both_manifests(bag: Path) -> None:
    for manifest in ("manifest-sha256.txt", "tagmanifest-sha256.txt"):
        result = run(["sha256sum", "-c", manifest], cwd=bag)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "FAILED" not in result.stdout
    listed = run(["sha256sum", "-c", "manifest-sha256.txt"], cwd=bag).stdout.splitlines()
    assert len(listed) == 3 and all(line.endswith(": OK") for line in listed)


@pytest.mark.skipif(OPENSSL is None, reason="no openssl binary")
def test_openssl_verifies_the_signature(bag: Path) -> None:
    assert OPENSSL is not None
    result = run([OPENSSL, *SIGNATURE_CHECK], cwd=bag)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Signature Verified Successfully" in result.stdout


@pytest.mark.skipif(not Path(FFPROBE).exists(), reason="no ffprobe at /usr/bin")
def test_ffprobe_reads_the_clip_and_the_originals(bag: Path) -> None:
    media = [*bag.glob("data/camera-*/clip.mp4"), *bag.glob("data/camera-*/originals/*.mov")]
    assert len(media) == 3
    for path in media:
        result = run([FFPROBE, "-v", "error", "-select_streams", "v",
                      "-show_entries", "stream=codec_type,codec_name", "-of", "csv=p=0",
                      str(path)])
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["h264,video"], (path, result.stdout)


def test_a_changed_payload_byte_fails_bagit_and_sha256sum(bag: Path) -> None:
    flip(bag / "data/camera-3/originals/0000000002.mov", 5000)
    bagit = run([str(BAGIT), "--validate", str(bag)])
    assert bagit.returncode != 0
    assert "0000000002.mov" in bagit.stderr
    sums = run(["sha256sum", "-c", "manifest-sha256.txt"], cwd=bag)
    assert sums.returncode != 0
    assert "data/camera-3/originals/0000000002.mov: FAILED" in sums.stdout


@pytest.mark.skipif(OPENSSL is None, reason="no openssl binary")
def test_a_changed_tag_manifest_fails_openssl(bag: Path) -> None:
    assert OPENSSL is not None
    flip(bag / "tagmanifest-sha256.txt", 10)
    result = run([OPENSSL, *SIGNATURE_CHECK], cwd=bag)
    assert result.returncode != 0
    assert "Signature Verification Failure" in result.stdout + result.stderr


@pytest.mark.skipif(OPENSSL is None, reason="no openssl binary")
def test_a_changed_signature_fails_openssl(bag: Path) -> None:
    assert OPENSSL is not None
    flip(bag / "signature/tagmanifest-sha256.txt.sig", 0)
    assert run([OPENSSL, *SIGNATURE_CHECK], cwd=bag).returncode != 0


def test_a_changed_tag_file_fails_sha256sum_and_bagit(bag: Path) -> None:
    flip(bag / "evidence.json", 3)
    sums = run(["sha256sum", "-c", "tagmanifest-sha256.txt"], cwd=bag)
    assert sums.returncode != 0 and "evidence.json: FAILED" in sums.stdout
    assert run([str(BAGIT), "--validate", str(bag)]).returncode != 0
