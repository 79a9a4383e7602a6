"""Routing: several integrations of one client active at once, each taking only its documents (type,
sub-organisation, tags), and an alternate export that is off by default and runs on demand."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from prefect.client.orchestration import get_client

from deployments.config import load_config
from deployments.deploy import apply_deployments
from tasks.sources.seed import write_document
from tests.test_rerun import served, wait_final

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def _deployment_and_run(name):
    async with get_client() as client:
        dep = await client.read_deployment_by_name(name)
        return dep, (await client.create_flow_run_from_deployment(dep.id)).id


async def _deployment(name):
    async with get_client() as client:
        return await client.read_deployment_by_name(name)


def test_integrations_of_one_client_take_only_their_documents_and_the_alternate_runs_on_demand(workspace):
    client = f"g{workspace.tag}"
    ws = workspace

    def folder(name):
        return {"folder": f"{name}/{{doc_type}}", "filename": "{doc_id}.{ext}"}

    erp = ws.integration("erp", client=client, filters={"document_types": ["invoice"], "sub_organisations": ["north"]},
                         mapping=folder("erp"), schedule={"interval": "5m"})
    arch = ws.integration("archive", client=client, filters={"tags": ["archive"]}, mapping=folder("archive"), schedule={"interval": "1h"})
    south = ws.integration("south-credit", client=client, filters={"document_types": ["credit_note"], "sub_organisations": ["south"]},
                           mapping=folder("south"), schedule={"cron": "*/10 * * * *"})
    alt = ws.integration("alternate", client=client, enabled=False, mapping=folder("alt"), schedule={"interval": "5m"})
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    docs = {  # id: (type, sub-organisation, tags)
        "INV-N1": ("invoice", "north", []),
        "INV-N2": ("invoice", "north", ["archive"]),
        "INV-S1": ("invoice", "south", []),
        "CN-S1": ("credit_note", "south", []),
        "CN-N1": ("credit_note", "north", ["archive", "q3"]),
        "ORD-1": ("order_confirmation", None, []),
    }
    for doc_id, (doc_type, sub_org, tags) in docs.items():
        write_document(ws.inbox, doc_id, client=client, doc_type=doc_type, sub_organisation=sub_org, tags=tags, approved_at=when)

    apply_deployments(load_config(only=erp))
    slugs = [k.replace("/", "-") for k in (erp, arch, south)]
    for slug in slugs:
        assert len(asyncio.run(_deployment(f"docroute-sync/{slug}")).schedules) == 1
    alt_dep = asyncio.run(_deployment(f"docroute-sync/{client}-alternate"))
    assert alt_dep.schedules == []  # off by default: deployed, never scheduled

    # one cycle: the three active deployments run at the same time on the serving process
    with served(ws, erp, *slugs) as proc:
        run_ids = [asyncio.run(_deployment_and_run(f"docroute-sync/{slug}"))[1] for slug in slugs]
        runs = [wait_final(run_id, proc) for run_id in run_ids]
    assert [r.state.type.value for r in runs] == ["COMPLETED"] * 3, [r.state.message for r in runs]

    def got(name):
        return sorted(p.stem for p in (ws.out / name).rglob("*.pdf"))

    assert got("erp") == ["INV-N1", "INV-N2"]  # invoices of sub-organisation north
    assert got("archive") == ["CN-N1", "INV-N2"]  # anything tagged archive
    assert got("south") == ["CN-S1"]  # credit notes of sub-organisation south
    assert got("alt") == []
    ledger = ws.ledger()
    assert {k: sorted(r["doc_id"] for r in ledger.rows(k)) for k in (erp, arch, south, alt)} == {
        erp: ["INV-N1", "INV-N2"], arch: ["CN-N1", "INV-N2"], south: ["CN-S1"], alt: []}

    # the alternate export, on demand for one document
    out = subprocess.run([sys.executable, "-m", "flows.cli", "sync", alt, "--document", "INV-S1"],
                         env=ws.env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert got("alt") == ["INV-S1"]
    assert [(r["doc_id"], r["status"]) for r in ledger.rows(alt)] == [("INV-S1", "delivered")]
    assert ledger.cursor(alt) is None  # on demand: no cursor, the next on-demand range starts where asked
