"""Evidence packages: built from real footage, verified offline, and every tampering
caught and named (retrieval/package.py, retrieval/verify.py; docs/design/package.md)."""

from __future__ import annotations

import hashlib
import itertools
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval import package, verify
from retrieval.package import PackageIntegrityError, PayloadFile, build_package
from retrieval.verify import Limits, render, verify_package
from tests import packages
from tests.packages import BAG, Built
from vigil.errors import InvalidInput

DATA_ORIGINAL = "data/camera-3/originals/0000000001.mov"
DATA_CLIP = "data/camera-3/clip.mp4"
# The files of lines in the test package, and how many lines each has.
LINE_COUNTS = {package.MANIFEST: 3, package.TAGMANIFEST: 5, package.CUSTODY_JSONL: 3}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return packages.build(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="module")
def contents(built: Built) -> dict[str, bytes]:
    """Each member's content, by its path inside the bag."""
    with zipfile.ZipFile(built.path) as zf:
        return {info.filename.removeprefix(BAG + "/"): zf.read(info)
                for info in zf.infolist()}


def rezip(src: Path, dst: Path, changes: dict[str, bytes | None]) -> Path:
    """``src`` with the members named in ``changes`` replaced (or removed, for None);
    every other member as it was, in the same order."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            name = info.filename.removeprefix(BAG + "/")
            data = changes.get(name, zin.read(info))
            if data is None:
                continue
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.compress_type, copy.external_attr = info.compress_type, info.external_attr
            copy.create_system = info.create_system
            zout.writestr(copy, data)
    return dst


def verify_changed(built: Built, changes: dict[str, bytes | None], *,
                   restitch: bool) -> verify.Report:
    with tempfile.TemporaryDirectory() as tmp:
        changed = rezip(built.path, Path(tmp) / "changed.zip", changes)
        return verify_package(changed, restitch=restitch)


def assert_caught(report: verify.Report, name: str) -> None:
    assert not report.ok, f"{name}: not detected"
    named = {f.file for f in report.failures}
    assert name in named, f"{name} is not named:\n{render(report)}"


def lines_of(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


# --- building and verifying ---------------------------------------------------------


def test_a_real_package_verifies(built: Built) -> None:
    report = verify_package(built.path, trusted_keys=[built.signing_key.public_key()])
    assert report.ok, render(report)
    assert report.checks == {"zip.safe": 11, "bag.structure": 4, "bag.manifest": 3,
                             "bag.tagmanifest": 5, "signature.package": 1,
                             "signature.trusted": 1, "signature.timestamp": 0,
                             "evidence.schema": 1, "chunk.hash": 2,
                             "chain.link": 3, "chain.checkpoint": 1, "clip.restitch": 1,
                             "custody.link": 3}
    assert render(report).endswith("VERIFIED")


def test_the_result_describes_the_zip(built: Built) -> None:
    data = built.path.read_bytes()
    assert built.result.bytes == len(data)
    assert built.result.sha256 == hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(built.path) as zf:
        tagmanifest = zf.read(f"{BAG}/{package.TAGMANIFEST}")
        signature = zf.read(f"{BAG}/{package.SIGNATURE}")
    assert built.result.tagmanifest_sha256 == hashlib.sha256(tagmanifest).hexdigest()
    built.signing_key.public_key().verify(signature, tagmanifest)


def test_the_same_inputs_give_the_same_bytes(built: Built, tmp_path: Path) -> None:
    again = build_package(out=tmp_path / "again.zip", **built.inputs)
    assert again.path.read_bytes() == built.path.read_bytes()
    assert again.sha256 == built.result.sha256


def test_footage_cut_again_gives_the_same_package(built: Built, tmp_path: Path) -> None:
    """Encoding, cutting, stitching and packaging are deterministic end to end."""
    again = packages.build(tmp_path)
    assert again.path.read_bytes() == built.path.read_bytes()


def test_entries_have_a_fixed_order_time_mode_and_compression(built: Built) -> None:
    with zipfile.ZipFile(built.path) as zf:
        infos = zf.infolist()
    names = [i.filename.removeprefix(BAG + "/") for i in infos]
    assert all(i.filename.startswith(BAG + "/") for i in infos)
    assert names == ["data/camera-3/clip.mp4", "data/camera-3/originals/0000000001.mov",
                     "data/camera-3/originals/0000000002.mov", *package.TAG_FILES[:3],
                     package.TAGMANIFEST, *package.TAG_FILES[3:], package.SIGNATURE,
                     package.SIGNING_KEY_PEM]
    for info, name in zip(infos, names, strict=True):
        assert info.date_time == (2025, 11, 25, 9, 30, 0)
        assert info.external_attr >> 16 == stat.S_IFREG | 0o644
        assert info.create_system == 3
        stored = name.startswith("data/") or name == package.SIGNATURE
        assert info.compress_type == (zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)


def test_tag_files_follow_the_format(built: Built, contents: dict[str, bytes]) -> None:
    assert contents["bagit.txt"] == b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    info = contents["bag-info.txt"].decode().splitlines()
    payload = [contents[n] for n in contents if n.startswith("data/")]
    assert info == [
        "Source-Organization: Vigil test bureau",
        f"External-Identifier: {packages.EXPORT_ID}",
        f"External-Description: Vigil evidence export for case {packages.CASE}",
        "Bagging-Date: 2025-11-25",
        f"Payload-Oxum: {sum(map(len, payload))}.{len(payload)}",
        "Bag-Software-Agent: vigil 0.1.0",
        f"Vigil-Case: {packages.CASE}",
        "Vigil-Signing-Key-Fingerprint: "
        + verify.chain.fingerprint(built.signing_key.public_key()),
    ]
    manifest = contents["manifest-sha256.txt"].decode().splitlines()
    assert manifest == [f"{hashlib.sha256(contents[n]).hexdigest()}  {n}"
                        for n in sorted(contents) if n.startswith("data/")]
    assert contents["evidence.json"].endswith(b"}\n")
    assert contents["custody.jsonl"].decode().splitlines() == packages.custody_lines()
    assert contents["signature/package-signing-key.pem"].startswith(
        b"-----BEGIN PUBLIC KEY-----\n")
    assert len(contents["signature/tagmanifest-sha256.txt.sig"]) == 64


def test_a_timestamp_token_is_packaged_when_given(built: Built, tmp_path: Path) -> None:
    seen = []

    def tsa(tagmanifest: bytes) -> bytes:
        seen.append(tagmanifest)
        return b"token over " + hashlib.sha256(tagmanifest).digest()

    result = build_package(out=tmp_path / "tsr.zip", **{**built.inputs, "timestamp_token": tsa})
    with zipfile.ZipFile(result.path) as zf:
        token = zf.read(f"{BAG}/{package.TIMESTAMP_TSR}")
    assert hashlib.sha256(seen[0]).hexdigest() == result.tagmanifest_sha256
    assert token == b"token over " + hashlib.sha256(seen[0]).digest()
    # Packaged verbatim; the verifier then refuses what is not an RFC 3161 timestamp
    # (real timestamps: tests/test_timestamp.py).
    report = verify_package(result.path, restitch=False)
    assert [(f.check, f.file) for f in report.failures] == \
        [("signature.timestamp", package.TIMESTAMP_TSR)], render(report)

    none = build_package(out=tmp_path / "none.zip",
                         **{**built.inputs, "timestamp_token": lambda _: None})
    assert none.path.read_bytes() == built.path.read_bytes()


def test_progress_rises_to_one(built: Built, tmp_path: Path) -> None:
    seen: list[float] = []
    build_package(out=tmp_path / "p.zip", **{**built.inputs, "on_progress": seen.append})
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 2
    checked: list[float] = []
    verify_package(tmp_path / "p.zip", restitch=False, on_progress=checked.append)
    assert checked == sorted(checked) and checked[-1] == 1.0


def test_a_payload_file_without_its_recorded_hash_is_refused(built: Built,
                                                             tmp_path: Path) -> None:
    files = list(built.inputs["files"])
    files[0] = PayloadFile(name=files[0].name, path=files[0].path, sha256="0" * 64)
    out = tmp_path / "out" / "p.zip"
    out.parent.mkdir()
    with pytest.raises(PackageIntegrityError, match="0000000001.mov"):
        build_package(out=out, **{**built.inputs, "files": files})
    assert list(out.parent.iterdir()) == []  # neither the package nor its temporary


@pytest.mark.parametrize("change", [
    {"files": [PayloadFile(name="../escape.mov", path=Path("/dev/null"))]},
    {"files": [PayloadFile(name="/abs.mov", path=Path("/dev/null"))]},
    {"files": [PayloadFile(name="a b.mov", path=Path("/dev/null"))]},
    {"files": [PayloadFile(name="x.mov", path=Path("/dev/null"))] * 2},
    {"files": [PayloadFile(name="x", path=Path("/dev/null")),
               PayloadFile(name="x/y", path=Path("/dev/null"))]},
    {"export_id": "../x"},
    {"bag_info": {"Source-Organization": "x"}},
    {"bag_info": {"Source-Organization": "a\nPayload-Oxum: 1.1", "External-Description": "d",
                  "Bag-Software-Agent": "a", "Vigil-Case": "c"}},
    {"custody_lines": ["{}\n{}"]},
    {"evidence": {"x": float("nan")}},
])
def test_inputs_the_format_cannot_hold_are_refused(built: Built, tmp_path: Path,
                                                   change: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        build_package(out=tmp_path / "p.zip", **{**built.inputs, **change})
    assert list(tmp_path.iterdir()) == []


def test_zip64_entries_verify(built: Built, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries beyond the (lowered) zip64 limit are written with zip64 sizes."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 16 << 10)
    first = build_package(out=tmp_path / "a.zip", **built.inputs)
    second = build_package(out=tmp_path / "b.zip", **built.inputs)
    assert first.path.read_bytes() == second.path.read_bytes()
    monkeypatch.undo()
    with zipfile.ZipFile(first.path) as zf:
        assert any(len(i.extra) >= 20 for i in zf.infolist())  # the zip64 extra field
    report = verify_package(first.path)
    assert report.ok, render(report)


# --- what verification says about trust and about what the packager wrote ----------


def test_a_package_signed_by_another_key_is_not_trusted(built: Built) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    report = verify_package(built.path, trusted_keys=[other], restitch=False)
    assert [(f.check, f.file) for f in report.failures] == [
        ("signature.trusted", package.SIGNING_KEY_PEM)]
    assert "not by a trusted key" in report.failures[0].message
    assert render(report).splitlines()[0].startswith(
        f"FAIL signature.trusted {package.SIGNING_KEY_PEM}: the package is signed by key ")


def test_without_trusted_key_the_report_says_so(built: Built) -> None:
    report = verify_package(built.path, restitch=False)
    assert report.ok and report.checks["signature.trusted"] == 0
    assert any("signature.trusted not checked" in n for n in report.notes)


def _rebuilt(built: Built, tmp_path: Path, evidence: Any = None, **changes: Any) -> Path:
    """A package re-built and re-signed with the packager's own key: what a packager
    (or whoever holds its key) could make, which the chain must still expose."""
    inputs = {**built.inputs, **changes}
    if evidence is not None:
        inputs["evidence"] = evidence
    return build_package(out=tmp_path / f"{uuid.uuid4().hex}.zip", **inputs).path


def test_an_original_swapped_and_resigned_breaks_the_chain(built: Built,
                                                           tmp_path: Path) -> None:
    files = list(built.inputs["files"])
    other = files[1].path  # the next chunk's bytes in the first chunk's place
    files[0] = PayloadFile(name=files[0].name, path=other)
    report = verify_package(_rebuilt(built, tmp_path, files=files))
    failed = {(f.check, f.file) for f in report.failures}
    assert ("chunk.hash", DATA_ORIGINAL) in failed
    assert ("chain.link", DATA_ORIGINAL) in failed
    assert ("chain.checkpoint", "evidence.json") in failed
    assert ("signature.package", package.SIGNATURE) not in failed


def test_a_clip_that_is_not_the_stitch_of_its_originals_fails(built: Built,
                                                              tmp_path: Path) -> None:
    files = [f if not f.name.endswith("clip.mp4") else
             PayloadFile(name=f.name, path=built.inputs["files"][0].path)
             for f in built.inputs["files"]]
    report = verify_package(_rebuilt(built, tmp_path, files=files))
    assert {f.check for f in report.failures} == {"clip.restitch"}, render(report)
    assert {f.file for f in report.failures} == {DATA_CLIP}


def test_deflated_payload_members_are_re_stitched_from_copies(built: Built,
                                                              tmp_path: Path) -> None:
    """Stored members are re-stitched in place (FFmpeg's subfile protocol), others from
    a copy made while hashing them: both paths reach the same verdict."""
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(built.path) as zin, zipfile.ZipFile(deflated, "w") as zout:
        for info in zin.infolist():
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.external_attr, copy.create_system = info.external_attr, info.create_system
            copy.compress_type = zipfile.ZIP_DEFLATED if "/data/" in info.filename \
                else info.compress_type
            zout.writestr(copy, zin.read(info))
    with zipfile.ZipFile(deflated) as zf:
        assert all(verify.stored_extent(zf.fp, i) is None  # type: ignore[arg-type]
                   for i in zf.infolist() if "/data/" in i.filename)
    report = verify_package(deflated)
    assert report.ok and report.checks["clip.restitch"] == 1, render(report)


def test_a_tampered_clip_read_in_place_is_not_re_stitched(built: Built,
                                                          tmp_path: Path) -> None:
    """The re-stitch runs while the members are hashed, but its verdict counts only for
    members that passed the manifest."""
    changed = bytearray(built.path.read_bytes())
    with zipfile.ZipFile(built.path) as zf:
        info = zf.getinfo(f"{BAG}/{DATA_CLIP}")
        at = verify.stored_extent(zf.fp, info)  # type: ignore[arg-type]
    assert at is not None
    changed[at[0] + at[1] // 2] ^= 0xFF
    path = tmp_path / "tampered.zip"
    path.write_bytes(bytes(changed))
    report = verify_package(path)
    failed = {(f.check, f.file) for f in report.failures}
    assert ("bag.manifest", DATA_CLIP) in failed
    assert ("clip.restitch", DATA_CLIP) in failed
    assert any("did not pass" in f.message for f in report.failures
               if f.check == "clip.restitch"), render(report)


def test_a_package_without_a_checkpoint_fails(built: Built, tmp_path: Path) -> None:
    evidence = deepcopy(built.evidence)
    evidence["items"][0]["checkpoint"] = None
    report = verify_package(_rebuilt(built, tmp_path, evidence), restitch=False)
    assert [(f.check, f.file) for f in report.failures] == [
        ("chain.checkpoint", "evidence.json")]
    assert "not covered by a signed checkpoint" in report.failures[0].message


def test_a_checkpoint_signed_by_an_unlisted_key_fails(built: Built, tmp_path: Path) -> None:
    evidence = deepcopy(built.evidence)
    evidence["keys"]["checkpoint_signing"][0]["public_key"] = "11" * 32
    report = verify_package(_rebuilt(built, tmp_path, evidence), restitch=False)
    failed = {(f.check, f.file) for f in report.failures}
    assert ("evidence.schema", "evidence.json") in failed  # fingerprint != sha256(key)
    assert ("chain.checkpoint", "evidence.json") in failed


def test_a_gap_left_out_of_the_evidence_fails(built: Built, tmp_path: Path) -> None:
    evidence = deepcopy(built.evidence)
    evidence["items"][0]["gaps"] = []
    report = verify_package(_rebuilt(built, tmp_path, evidence), restitch=False)
    assert [(f.check, f.file) for f in report.failures] == [("evidence.schema",
                                                             "evidence.json")]
    assert "stretches no chunk covers" in report.failures[0].message


def _with_chunk(evidence: dict[str, Any], chunk: Any) -> dict[str, Any]:
    item = evidence["items"][0]
    return {**evidence, "items": [{**item, "chunks": [chunk, *item["chunks"][1:]]}]}


def _with_item(evidence: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**evidence, "items": [{**evidence["items"][0], **fields}]}


MALFORMED = {
    "only a format": lambda e: {"format": "vigil-evidence/1"},
    "a list": lambda e: [e],
    "items not a list": lambda e: {**e, "items": "none"},
    "no items, export id a number": lambda e: {**e, "items": [],
                                               "export": {**e["export"], "id": 7}},
    "seq a boolean": lambda e: _with_chunk(e, {**e["items"][0]["chunks"][0], "seq": True}),
    "hash in upper case": lambda e: _with_chunk(
        e, {**e["items"][0]["chunks"][0],
            "sha256": e["items"][0]["chunks"][0]["sha256"].upper()}),
    "chunk without end": lambda e: _with_chunk(
        e, {k: v for k, v in e["items"][0]["chunks"][0].items() if k != "end_us"}),
    "chunk a string": lambda e: _with_chunk(e, "chunk"),
    "chunk null": lambda e: _with_chunk(e, None),
    "checkpoint half empty": lambda e: _with_item(e, checkpoint={"seq": "4"}),
    "camera a list, keys a number": lambda e: {**_with_item(e, camera=[]),
                                               "keys": {"checkpoint_signing": 1}},
    "items of every type": lambda e: {**e, "items": [None, 3, {}]},
    "packaged on another day": lambda e: {**e, "export": {
        **e["export"], "packaged_at": "2025-11-26T00:00:00+00:00"}},
    "case of another reference": lambda e: {**e, "export": {
        **e["export"], "case": {"reference": "OTHER", "title": "t"}}},
}


@pytest.mark.parametrize("how", sorted(MALFORMED))
def test_malformed_evidence_gives_schema_failures(built: Built, tmp_path: Path,
                                                  how: str) -> None:
    evidence = MALFORMED[how](deepcopy(built.evidence))
    report = verify_package(_rebuilt(built, tmp_path, evidence), restitch=False)
    assert not report.ok
    assert any(f.check == "evidence.schema" and f.file == "evidence.json"
               for f in report.failures), render(report)
    assert report.checks["signature.package"] == 1  # the package itself is intact


# --- every tampering is caught and named (property-based) ---------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_byte_flip_is_caught(built: Built, contents: dict[str, bytes],
                                   data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(contents)), label="member")
    content = contents[name]
    offset = data.draw(st.integers(0, len(content) - 1), label="offset")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = content[:offset] + bytes([content[offset] ^ flip]) + content[offset + 1:]
    # A flip inside media is caught by its manifest hash; re-stitching adds nothing.
    report = verify_changed(built, {name: changed}, restitch=not name.startswith("data/"))
    assert_caught(report, name)


@pytest.mark.parametrize("name", [package.SIGNATURE, package.SIGNING_KEY_PEM,
                                  package.BAGIT_TXT, package.TAGMANIFEST])
def test_every_byte_of_the_signed_root_is_covered(built: Built, contents: dict[str, bytes],
                                                  name: str) -> None:
    """Exhaustively, for the small files everything else hangs on."""
    content = contents[name]
    for offset in range(len(content)):
        changed = content[:offset] + bytes([content[offset] ^ 0x01]) + content[offset + 1:]
        assert_caught(verify_changed(built, {name: changed}, restitch=False), name)


@pytest.mark.parametrize("name", [n for n in sorted(verify.SMALL_FILES) if n !=
                                  package.TIMESTAMP_TSR] + [DATA_ORIGINAL, DATA_CLIP])
def test_every_missing_member_is_caught(built: Built, name: str) -> None:
    assert_caught(verify_changed(built, {name: None}, restitch=True), name)


@pytest.mark.parametrize(("name", "i", "j"), [
    (name, i, j) for name, count in LINE_COUNTS.items()
    for i, j in itertools.combinations(range(count), 2)])
def test_every_reordering_of_two_lines_is_caught(built: Built, contents: dict[str, bytes],
                                                 name: str, i: int, j: int) -> None:
    lines = lines_of(contents[name])
    assert len(lines) == LINE_COUNTS[name]
    lines[i], lines[j] = lines[j], lines[i]
    assert_caught(verify_changed(built, {name: b"".join(lines)}, restitch=True), name)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_substitution_of_one_member_by_another_is_caught(
        built: Built, contents: dict[str, bytes], data: st.DataObject) -> None:
    names = sorted(contents)
    target = data.draw(st.sampled_from(names), label="replaced")
    source = data.draw(st.sampled_from([n for n in names if contents[n] != contents[target]]),
                       label="by")
    report = verify_changed(built, {target: contents[source]}, restitch=True)
    assert_caught(report, target)


# --- hostile zips -------------------------------------------------------------------


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _link(name: str) -> zipfile.ZipInfo:
    """A symbolic link entry (its content, the link's target, is the caller's)."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.fixture
def quiet_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory inside an empty directory, both checked afterwards
    for anything written; and the temporary directory checked for leftovers."""
    outer = tmp_path / "outer"
    cwd = outer / "cwd"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    before = {p.name for p in Path(tempfile.gettempdir()).glob("vigil-verify-*")}
    yield cwd
    assert list(cwd.iterdir()) == []
    assert [p.name for p in outer.iterdir()] == ["cwd"]
    assert {p.name for p in Path(tempfile.gettempdir()).glob("vigil-verify-*")} == before


ESCAPE = f"escape-{uuid.uuid4().hex}"


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(("entries", "named"), [
    ([(f"../{ESCAPE}", b"x")], f"../{ESCAPE}"),
    ([(f"{BAG}/../../{ESCAPE}", b"x")], f"{BAG}/../../{ESCAPE}"),
    ([(f"/tmp/{ESCAPE}", b"x")], f"/tmp/{ESCAPE}"),
    ([(f"C:/{ESCAPE}", b"x")], f"C:/{ESCAPE}"),
    ([(f"{BAG}\\..\\{ESCAPE}", b"x")], f"{BAG}\\..\\{ESCAPE}"),
    ([(_link(f"{BAG}/data/link"), b"/etc/passwd")], f"{BAG}/data/link"),
    ([(f"{BAG}/bagit.txt", b"a"), (f"{BAG}/bagit.txt", b"b")], f"{BAG}/bagit.txt"),
    ([(f"{BAG}/data/A.mov", b"a"), (f"{BAG}/data/a.mov", b"b")], f"{BAG}/data/a.mov"),
])
def test_hostile_names_and_links_stop_verification(tmp_path: Path, quiet_cwd: Path,
                                                   entries: list[tuple[Any, bytes]],
                                                   named: str) -> None:
    path = _zip(tmp_path / "hostile.zip", entries)
    report = verify_package(path)
    assert [f.check for f in report.failures] == ["zip.safe", "zip.safe"], render(report)
    assert report.failures[0].file == named
    assert "nothing else was checked" in report.failures[-1].message
    assert not (quiet_cwd.parent.parent / ESCAPE).exists()
    assert not Path(f"/tmp/{ESCAPE}").exists()


def test_a_zip_bomb_is_refused_before_inflating(tmp_path: Path, quiet_cwd: Path) -> None:
    path = _zip(tmp_path / "bomb.zip", [(f"{BAG}/data/zeros.mov", bytes(20 << 20))])
    assert path.stat().st_size < 100 << 10
    ratio = verify_package(path, limits=Limits(max_ratio=200))
    assert [f.check for f in ratio.failures] == ["zip.safe", "zip.safe"]
    assert "expands" in ratio.failures[0].message
    size = verify_package(path, limits=Limits(max_total_bytes=1 << 20, max_ratio=1e9))
    assert "more than the limit" in size.failures[0].message


def test_too_many_entries_are_refused(tmp_path: Path, quiet_cwd: Path) -> None:
    path = _zip(tmp_path / "many.zip", [(f"{BAG}/data/{n}.mov", b"x") for n in range(11)])
    report = verify_package(path, limits=Limits(max_entries=10))
    assert report.failures[0] == verify.Failure(
        file="", check="zip.safe", message="11 entries, more than the limit of 10")


def test_a_real_package_beyond_small_limits_is_refused(built: Built, quiet_cwd: Path) -> None:
    report = verify_package(built.path, limits=Limits(max_total_bytes=50_000))
    assert {f.check for f in report.failures} == {"zip.safe"}


@pytest.mark.parametrize("content", [b"", b"not a zip at all", bytes(range(256)) * 16,
                                     b"PK\x05\x06" + bytes(18)])
def test_what_is_not_a_zip_is_reported(tmp_path: Path, quiet_cwd: Path,
                                       content: bytes) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(content)
    report = verify_package(path)
    assert not report.ok
    assert report.failures[0].check in ("zip.safe", "bag.structure")


def test_members_outside_the_format_are_named(built: Built, tmp_path: Path) -> None:
    path = rezip(built.path, tmp_path / "extra.zip", {})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{BAG}/notes.txt", b"hello")
        zf.writestr(f"{BAG}/data/camera-3/extra.mov", b"extra")
        zf.writestr("README.txt", b"outside")
    report = verify_package(path, restitch=False)
    failed = {(f.check, f.file) for f in report.failures}
    assert failed >= {("bag.structure", "notes.txt"),
                      ("bag.manifest", "data/camera-3/extra.mov"),
                      ("evidence.schema", "data/camera-3/extra.mov"),
                      ("bag.structure", "README.txt")}, render(report)


def test_load_public_key_reads_pem_raw_and_hex(built: Built) -> None:
    public = built.signing_key.public_key()
    raw = public.public_bytes(verify.Encoding.Raw, verify.PublicFormat.Raw)
    pem = package.public_key_pem(built.signing_key)
    for form in (pem, raw, raw.hex().encode(), raw.hex().encode() + b"\n"):
        assert verify.load_public_key(form).public_bytes(
            verify.Encoding.Raw, verify.PublicFormat.Raw) == raw
    with pytest.raises(InvalidInput):
        verify.load_public_key(b"nonsense")


def test_the_verifier_knows_the_builders_format() -> None:
    """verify.py stands alone (an auditor may vendor it): its copy of the format's
    names is the builder's."""
    for name in ("BAG_DIR_PREFIX", "BAGIT_TXT", "BAG_INFO_TXT", "MANIFEST", "TAGMANIFEST",
                 "EVIDENCE_JSON", "CUSTODY_JSONL", "SIGNATURE", "SIGNING_KEY_PEM",
                 "TIMESTAMP_TSR", "TAG_FILES", "BAGIT_TXT_BYTES"):
        assert getattr(verify, name) == getattr(package, name), name
    assert verify.BAG_INFO_LABELS == tuple(label for label, _ in package.BAG_INFO_LABELS)


def test_a_failed_report_raises_when_asked(built: Built) -> None:
    verify_package(built.path, restitch=False).raise_if_failed()
    report = verify_changed(built, {DATA_ORIGINAL: b"x"}, restitch=False)
    with pytest.raises(verify.PackageInvalid, match="FAIL bag.manifest " + DATA_ORIGINAL):
        report.raise_if_failed()


def test_a_chain_claimed_to_start_at_genesis_mid_camera_fails(built: Built,
                                                              tmp_path: Path) -> None:
    evidence = deepcopy(built.evidence)
    evidence["items"][0]["chain_prev"] = "00" * 32
    report = verify_package(_rebuilt(built, tmp_path, evidence), restitch=False)
    failed = [(f.check, f.file) for f in report.failures]
    assert ("chain.link", "evidence.json") in failed  # GENESIS only before seq 0
    assert ("chain.link", DATA_ORIGINAL) in failed  # and the first link does not follow
