"""An idle run (every document in the window already delivered) opens no connection and runs no batch.

Found by bench/idle_bench.py: with documents inside the lookback window, every scheduled run used to
log in to the SFTP server and run one deliver-batch task per 200 documents, only to skip them all.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timedelta, timezone

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

from blocks.sftp import SftpConnection
from flows.sync import sync
from tasks.sources.seed import write_document


async def _task_runs(flow_run_id, name: str) -> int:
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)),
        )
    return len(runs)


def test_idle_run_opens_no_connection_and_runs_no_batch(workspace, sftp_server, monkeypatch):  # noqa: F811
    server = sftp_server
    root = server.mkdir(f"idle-{workspace.tag}")
    SftpConnection(host=server.host, port=server.port, username=server.user, password=server.password,
                   host_key=server.known_hosts_line, base_folder=str(root)).save(f"sftp-{workspace.tag}")
    key = workspace.integration(connection=f"sftp-connection/sftp-{workspace.tag}", lookback="2d")
    monkeypatch.setenv("DOCROUTE_BATCH_SIZE", "2")
    from tasks.settings import get_settings

    get_settings.cache_clear()
    approved = datetime.now(timezone.utc) - timedelta(minutes=30)  # inside the next runs' lookback window
    ids = [f"IDLE-{i}" for i in range(5)]
    for doc_id in ids:
        write_document(workspace.inbox, doc_id, client="acme", approved_at=approved, metadata={"number": doc_id})
    try:
        logins = server.logins()
        first = sync(integration=key, return_state=True)
        assert sorted(o["doc_id"] for o in first.result()["outcomes"] if o["status"] == "delivered") == ids
        assert server.logins() > logins
        logins = server.logins()
        assert asyncio.run(_task_runs(first.state_details.flow_run_id, "deliver-batch")) == 3  # 5 documents, 2 a batch

        idle = sync(integration=key, return_state=True)
        assert idle.is_completed()
        assert idle.result()["outcomes"] == [] and idle.result()["summary"] == "nothing new"
        assert server.logins() == logins  # no login to the partner's server for nothing
        assert asyncio.run(_task_runs(idle.state_details.flow_run_id, "deliver-batch")) == 0

        # a changed document is still seen by the next run: the skip is by the files' fingerprint
        write_document(workspace.inbox, ids[0], client="acme", approved_at=approved, metadata={"number": "changed"}, pdf_size=9_000)
        changed = sync(integration=key, return_state=True)
        assert [(o["doc_id"], o["status"]) for o in changed.result()["outcomes"]] == [(ids[0], "delivered")]
        assert server.logins() > logins
    finally:
        shutil.rmtree(root, ignore_errors=True)
