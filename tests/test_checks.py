"""The connection-check flow on a real Prefect server, against real endpoints."""

from __future__ import annotations

import asyncio
import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

from blocks.local_folder import LocalFolderConnection
from blocks.webhook import WebhookConnection
from flows.checks import ConnectionCheckFailed, check_connections
from tests.connectors.harness_webhook import Receiver, new_secret


async def _checks_of(flow_run_id):
    async with get_client() as client:
        (art,) = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["connection-checks"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
        return art


def test_checks_every_connection_in_use_and_names_the_broken_one(workspace):
    secret = new_secret()
    receiver = Receiver([secret])
    try:
        WebhookConnection(url=receiver.url, signing_secrets=[secret]).save(f"hook-{workspace.tag}")
        LocalFolderConnection(base_folder=str(workspace.root / "missing")).save(f"gone-{workspace.tag}")
        workspace.integration("a", filters={"document_types": ["invoice"]})
        workspace.integration("b", connection=f"webhook-connection/hook-{workspace.tag}")
        rows = check_connections()
        assert {r["connection"]: r["ok"] for r in rows} == {
            workspace.connection_ref: True, f"webhook-connection/hook-{workspace.tag}": True, workspace.source_ref: True}
        assert {r["connection"]: r["mode"] for r in rows}[workspace.source_ref] == "source"  # the inbox is checked too
        assert len(receiver.pings) == 1  # the webhook check really reached the receiver, signed
        assert list(workspace.out.iterdir()) == []  # the probe file was removed

        workspace.integration("c", connection=f"local-folder-connection/gone-{workspace.tag}", filters={"document_types": ["credit_note"]})
        state = check_connections(return_state=True)
        assert state.is_failed()
        with pytest.raises(ConnectionCheckFailed, match=rf"1 of 4 connections failed: local-folder-connection/gone-{workspace.tag}: local folder .*missing: folder does not exist"):
            state.result()
        art = asyncio.run(_checks_of(state.state_details.flow_run_id))
        table = json.loads(art.data) if isinstance(art.data, str) else art.data
        assert {r["connection"]: r["ok"] for r in table}[f"local-folder-connection/gone-{workspace.tag}"] is False
        assert secret not in json.dumps(table)
    finally:
        receiver.stop()


def test_an_unknown_block_fails_the_check_run_with_its_name(prefect_server):
    with pytest.raises(ConnectionCheckFailed, match="'local-folder-connection/definitely-not-there' does not exist"):
        check_connections(connections=["local-folder-connection/definitely-not-there"])
