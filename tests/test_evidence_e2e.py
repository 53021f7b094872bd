"""What the evidence issue promises, end to end, on `vigil run`'s demo camera.

An investigator opens a case and exports a clip with a watermarked copy, from the
CLI and from the API; an auditor verifies both packages with `vigil verify` and with
a standard tool alone. Real processes throughout: `vigil run` (stack, API, worker,
recorder), the `vigil` CLI, `bagit.py`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.support import VIGIL, read_rest, read_until, settings_for
from vigil.db import make_engine

pytestmark = pytest.mark.slow

BAGIT = str(Path(sys.executable).with_name("bagit.py"))


def _vigil(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*VIGIL, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_an_investigator_exports_the_demo_camera_and_an_auditor_verifies(
        own_stack: dict[str, str], tmp_path: Path) -> None:
    env = own_stack
    run = subprocess.Popen([*VIGIL, "run"], env=env, stdout=subprocess.PIPE,
                           stderr=(tmp_path / "run.log").open("w"), text=True)
    try:
        lines = read_until(run, "Admin token:", timeout_s=120)
        url = next(line.split()[-1] for line in lines if line.startswith("Vigil API:"))
        engine = make_engine(settings_for(env), pool_size=1)
        try:
            deadline = time.monotonic() + 90
            starts: list = []
            while len(starts) < 2 and time.monotonic() < deadline:
                with engine.connect() as conn:
                    starts = list(conn.execute(text(
                        "SELECT start_at FROM chunks JOIN cameras c ON c.id = camera_id "
                        "WHERE c.name = 'demo' ORDER BY seq")).scalars())
                time.sleep(1)
        finally:
            engine.dispose()
        assert len(starts) >= 2, "the demo camera was not recorded"
        # Across the boundary between the first two chunks, mid-frame at both ends.
        t0 = starts[0] + timedelta(seconds=4, milliseconds=517)
        t1 = starts[1] + timedelta(seconds=3, milliseconds=211)

        created = _vigil(env, "token", "create", "--role", "investigator", "--name", "ivy")
        assert created.returncode == 0, created.stderr
        token = created.stdout.split()[-1]
        case = _vigil(env, "case", "create", "Shoplifting at the kiosk", "--as", "ivy")
        assert case.returncode == 0, case.stderr
        reference = case.stdout.strip()

        # From the CLI: the export, its progress, the download.
        cli_package = tmp_path / "cli.zip"
        exported = _vigil(env, "export", reference, "--camera", "demo", "--from",
                          t0.isoformat(), "--to", t1.isoformat(), "--watermark-for",
                          "Public Prosecutor", "-o", str(cli_package), "--as", "ivy")
        assert exported.returncode == 0, exported.stderr + exported.stdout
        assert cli_package.exists()

        # From the API: the same, as the investigator's token.
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{url}/api/v1/cases/{reference}/exports", headers=auth, timeout=30,
                       json={"purpose": "court", "recipient": "Defence counsel",
                             "items": [{"camera": "demo", "from": t0.isoformat(),
                                        "to": t1.isoformat()}]})
        assert r.status_code == 202, r.text
        export_id = r.json()["id"]
        deadline = time.monotonic() + 180
        status = r.json()
        while status["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(1)
            status = httpx.get(f"{url}/api/v1/exports/{export_id}", headers=auth,
                               timeout=30).json()
        assert status["status"] == "succeeded", status
        download = httpx.get(f"{url}/api/v1/exports/{export_id}/package", headers=auth,
                             timeout=120)
        assert download.status_code == 200
        api_package = tmp_path / "api.zip"
        api_package.write_bytes(download.content)
    finally:
        run.send_signal(signal.SIGINT)
        read_rest(run, timeout_s=120)
    assert run.returncode == 0

    # The auditor, with no server running at all.
    for package in (cli_package, api_package):
        checked = _vigil(env, "verify", str(package))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "FAIL" not in checked.stdout
        bag = tmp_path / package.stem
        with zipfile.ZipFile(package) as z:
            z.extractall(bag)
        (root,) = bag.iterdir()
        validated = subprocess.run([BAGIT, "--validate", str(root)], capture_output=True,
                                   text=True, timeout=300, check=False)
        assert validated.returncode == 0, validated.stderr
        assert list(root.glob("data/camera-*/clip-watermarked.mp4"))
