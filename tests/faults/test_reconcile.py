"""The reconcile flow finds real differences between the ledger and the destination (and only those)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from deployments.schema import Integration
from flows.reconcile import (
    HASH,
    MISSING,
    PARTIAL,
    SIZE,
    UNRECORDED,
    ReconcileFailed,
    listing_prefix,
    reconcile,
)
from flows.sync import sync
from tasks.sources.seed import write_document
from tests.connectors.harness_s3 import s3_harness  # noqa: F401 - fixture
from tests.faults.helpers import assert_reconciles, seed_docs
from tests.test_sync_flow import _artifacts_and_run

SIDECAR = {"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}", "sidecar": True}


def _rows(state, key):
    _, arts = asyncio.run(_artifacts_and_run(state.state_details.flow_run_id, key))
    assert len(arts) == 1 and arts[0].type == "table"
    return json.loads(arts[0].data) if isinstance(arts[0].data, str) else arts[0].data


@pytest.mark.parametrize(
    "folder, prefix",
    [
        ("{client}/{doc_type}", "acme"),
        ("exports/{client}/{approved_at:%Y/%m}", "exports/acme"),
        ("{external_id}_{integration}/x", "EXT_1_inv/x"),
        ("{doc_type}/{client}", ""),
        ("{client}_{number}", ""),
    ],
)
def test_listing_prefix_is_the_constant_part_of_the_folder_template(folder, prefix):
    integ = Integration(
        name="inv", client="acme", source="s/x", connection="c/y", activated_at="2026-01-01T00:00:00Z",
        identifiers={"external_id": "EXT/1"}, mapping={"folder": folder},
    )
    assert listing_prefix(integ) == prefix  # identifiers are sanitised as in a real path


def test_reconcile_lists_every_kind_of_difference_and_fails_the_run(workspace):
    key = workspace.integration(mapping=SIDECAR)
    ids = seed_docs(workspace, 5)
    sync(integration=key)
    # another integration on the same connection writes under the same prefix: its files are not "unrecorded"
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    write_document(workspace.inbox, "CN-1", client="acme", doc_type="credit_note", approved_at=when)
    other = workspace.integration("credits", filters={"document_types": ["credit_note"]}, mapping=SIDECAR)
    workspace.integration(filters={"document_types": ["invoice"]}, mapping=SIDECAR)
    sync(integration=other)
    state = reconcile(integration=key, return_state=True)
    assert state.is_completed(), state.message
    assert _rows(state, "reconcile-acme-invoices")[0]["kind"] == "no difference"

    folder = workspace.out / "acme" / "invoice"
    (folder / f"{ids[0]}.pdf").unlink()  # removed at the destination
    (folder / f"{ids[1]}.json").write_text("{}")  # sidecar replaced by something else
    pdf = (folder / f"{ids[2]}.pdf").read_bytes()
    (folder / f"{ids[2]}.pdf").write_bytes(pdf[:-8] + b"tampered")  # same size, other content
    (folder / "STRAY-9.pdf").write_bytes(b"%PDF-1.4 put here by someone else")
    (folder / f".{ids[3]}.pdf.0badc0de.partial").write_bytes(b"%PDF-1.4 half")
    state = reconcile(integration=key, return_state=True)
    assert state.is_failed()
    with pytest.raises(ReconcileFailed) as info:
        state.result()
    text = str(info.value)
    assert text.startswith("acme/invoices: 4 differences between the ledger and ")  # no hashes: tampering unseen
    assert f"{ids[0]} acme/invoice/{ids[0]}.pdf" in text and "STRAY-9.pdf" in text
    rows = {(r["kind"], r["document"], r["path"]) for r in _rows(state, "reconcile-acme-invoices")}
    assert rows == {
        (MISSING, ids[0], f"acme/invoice/{ids[0]}.pdf"),
        (SIZE, ids[1], f"acme/invoice/{ids[1]}.json"),
        (UNRECORDED, "", "acme/invoice/STRAY-9.pdf"),
        (PARTIAL, ids[3], f"acme/invoice/.{ids[3]}.pdf.0badc0de.partial"),
    }
    with pytest.raises(ReconcileFailed) as info:
        reconcile(integration=key, hashes=True)
    assert f"{HASH}: {ids[2]} acme/invoice/{ids[2]}.pdf" in str(info.value)

    # the command line: exit 1, the differences named
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    out = subprocess.run([sys.executable, "-m", "flows.cli", "reconcile", key], env=workspace.env(), capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Failed: acme/invoices: 4 differences" in out.stdout and f"{MISSING}: {ids[0]}" in out.stdout


def test_reconcile_against_s3_sees_missing_objects_and_unfinished_uploads(workspace, s3_harness):  # noqa: F811
    name = f"s3-{workspace.tag}"
    s3_harness.connection().save(name)
    key = workspace.integration(connection=f"s3-connection/{name}", mapping=SIDECAR)
    ids = seed_docs(workspace, 3)
    sync(integration=key)
    assert_reconciles(key, n_files=6)
    client, bucket = s3_harness.client, s3_harness.bucket
    client.delete_object(Bucket=bucket, Key=f"exports/acme/invoice/{ids[1]}.json")  # a delete marker: gone
    client.create_multipart_upload(Bucket=bucket, Key=f"exports/acme/invoice/{ids[2]}.pdf")
    with pytest.raises(ReconcileFailed) as info:
        reconcile(integration=key)
    text = str(info.value)
    assert "2 differences" in text
    assert f"{MISSING}: {ids[1]} acme/invoice/{ids[1]}.json" in text
    assert f"{PARTIAL}: {ids[2]} acme/invoice/{ids[2]}.pdf" in text
