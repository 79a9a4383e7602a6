"""The README's demo command, end to end, on a Prefect server of its own: it runs every integration's
sync, says what happened and where to look, and prints no error of its own making."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.net import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_runs_end_to_end_and_says_where_to_look(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCROUTE_", "PREFECT_"))}
    env.update(PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_HOME=str(tmp_path / "prefect-home"))
    out = subprocess.run([sys.executable, "-m", "flows.demo", "--once", "--data", str(tmp_path / "demo")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert f"Starting a local Prefect server on 127.0.0.1:{port}" in text
    assert "=== docroute demo: what happened ===" in text
    assert "acme/invoices-to-erp  [Failed]" in text and "FAILED  ACME-INV-2001" in text  # on purpose, named
    assert "globex/invoices-to-erp  [Completed]" in text
    assert f"Prefect UI:       http://127.0.0.1:{port}" in text and "Artifacts page, key sync-acme-invoices-to-erp" in text
    assert "integration" in text and "acme/orders-to-purchasing" in text  # the status table
    assert list((tmp_path / "demo" / "out" / "erp-import").rglob("*.pdf"))  # the exported files are where it says
    # the partner systems' clients: GetMyInvoices in, Infor IDM + ION and the access point out, its verdicts shown
    assert list((tmp_path / "demo" / "out" / "erp-import" / "UMB-3_NL855566677B01").rglob("*.pdf"))
    for key, delivered in (("umbrella/gmi-to-erp", 5), ("hooli/invoices-to-infor", 4), ("vandelay/invoices-to-peppol", 3)):
        assert re.search(rf"{key}  \[\w+[^\]]*\]  {delivered} delivered\n", text), key
    assert len(re.findall(r"accepted  VAN-INV-300\d", text)) == 3
    for noise in ("ERROR", "Traceback", "Starting temporary server"):
        assert noise not in text, [line for line in text.splitlines() if noise in line]
