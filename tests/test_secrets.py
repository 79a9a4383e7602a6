"""A secret put in a block never appears in logs, artifacts, parameters, exceptions, output or the ledger."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort

from blocks.ledger import LedgerDatabase
from tasks.sources.seed import write_document

PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")


@pytest.fixture
def pg_database():
    name = f"docroute_secret_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(**PG)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    yield name
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


async def _everything_the_server_shows(flow_name: str) -> tuple[str, str]:
    """(all runs, logs, artifacts and states as text, the block documents with secrets revealed)."""
    async with get_client() as client:
        # by name: the session's server also holds other tests' deployments, whose scheduled runs sort first
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=flow_name)),
                                           sort=FlowRunSort.START_TIME_DESC, limit=50)
        ids = [r.id for r in runs]
        logs, offset = [], 0
        while batch := await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset
        ):
            logs += batch
            offset += len(batch)
        arts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        shown = json.dumps(
            {
                "runs": [r.model_dump(mode="json") for r in runs],
                "logs": [log.message for log in logs],
                "artifacts": [a.model_dump(mode="json") for a in arts],
            }
        )
        blocks, offset = [], 0
        while batch := await client.read_block_documents(include_secrets=True, offset=offset, limit=200):  # paged: a session saves hundreds
            blocks += batch
            offset += len(batch)
        revealed = json.dumps([b.model_dump(mode="json") for b in blocks])
        return shown, revealed


def test_block_secrets_never_leak(workspace, pg_database):
    secret = f"S3cret-{uuid.uuid4().hex}"
    url = f"postgresql+psycopg2://postgres:{secret}@127.0.0.1:5432/{pg_database}"
    LedgerDatabase(url=url).save(f"ledger-{workspace.tag}")
    key = workspace.integration(name=f"secret-{workspace.tag}")
    now = datetime.now(timezone.utc)
    for i in range(3):
        write_document(workspace.inbox, f"SEC-{i}", client="acme", approved_at=now - timedelta(hours=1), metadata={"number": f"N{i}"})
    write_document(workspace.inbox, "SEC-BAD", client="acme", approved_at=now - timedelta(hours=1), pdf=b"")

    env = workspace.env()
    env.pop("DOCROUTE_LEDGER_URL")
    env["DOCROUTE_LEDGER_BLOCK"] = f"ledger-{workspace.tag}"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sync", key],
        env=env, capture_output=True, text=True, timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "SEC-BAD" in output  # the run ended Failed and named the bad document

    shown, revealed = asyncio.run(_everything_the_server_shows(f"secret-{workspace.tag}"))
    assert secret in revealed  # the scan below looks at data that really does hold the secret elsewhere
    assert f"secret-{workspace.tag}" in shown and "SEC-BAD" in shown  # runs, logs and artifacts were read
    assert secret not in shown
    assert secret not in output

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        dump = json.dumps(
            [list(map(str, row)) for table in ("documents", "events", "cursors") for row in conn.execute(sa.text(f"SELECT * FROM {table}"))]
        )
    engine.dispose()
    assert "SEC-0" in dump and "delivered" in dump  # the ledger really is in this database
    assert secret not in dump


# -- every block that holds a secret, through sync and check runs that succeed and that fail --------

import base64  # noqa: E402
import traceback  # noqa: E402
from urllib.parse import quote, quote_plus  # noqa: E402

from prefect.logging.handlers import APILogWorker  # noqa: E402
from prefect_aws import AwsCredentials  # noqa: E402

from blocks.s3 import S3Connection  # noqa: E402
from blocks.sftp import SftpConnection  # noqa: E402
from blocks.smtp import SmtpConnection  # noqa: E402
from blocks.webhook import WebhookConnection  # noqa: E402
from flows.checks import check_connections  # noqa: E402
from flows.sync import sync  # noqa: E402
from tests.connectors.harness_email import USER as SMTP_USER  # noqa: E402
from tests.connectors.harness_email import SmtpServer  # noqa: E402
from tests.connectors.harness_s3 import REGION  # noqa: E402
from tests.connectors.harness_webhook import Receiver, new_secret  # noqa: E402


def encoded_forms(secret: str) -> set[str]:
    """The secret and the encodings it could leak in: URL-quoted, base64, hex."""
    raw = secret.encode()
    return {
        secret, quote(secret), quote(secret, safe=""), quote_plus(secret),
        base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(), base64.b64encode(raw).decode().rstrip("="),
        raw.hex(),
    }


async def _server_view(flow_run_ids) -> str:
    """Everything the Prefect server holds about these runs: runs (names, parameters, states and their
    history), task runs, logs and artifacts, as one text."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName, LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        by_id = FlowRunFilter(id=FlowRunFilterId(any_=list(flow_run_ids)))
        runs = await client.read_flow_runs(flow_run_filter=by_id)
        tasks = await client.read_task_runs(flow_run_filter=by_id)
        states = [await client.read_flow_run_states(r.id) for r in runs]
        logs, offset = [], 0
        while batch := await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(flow_run_ids))), limit=200, offset=offset
        ):
            logs += batch
            offset += len(batch)
        arts = await client.read_artifacts(flow_run_filter=by_id)
        return json.dumps({
            "runs": [r.model_dump(mode="json") for r in runs],
            "states": [[s.model_dump(mode="json") for s in h] for h in states],
            "task_runs": [t.model_dump(mode="json") for t in tasks],
            "logs": [log.model_dump(mode="json") for log in logs],
            "artifacts": [a.model_dump(mode="json") for a in arts],
        }, ensure_ascii=False)


def test_no_connection_secret_leaks_from_sync_or_check_runs(workspace, sftp_server, moto_s3_server, capsys, caplog):
    """SFTP password, private key and passphrase; webhook signing secret, bearer token and basic password;
    S3 secret access key; SMTP password: each in a block used by a sync run that delivers and by one
    that fails on it, and by the connection-check flow. None of them, in any encoded form, may be in
    the runs, states, logs, artifacts, ledger rows and events, or the raised exceptions."""
    tag = workspace.tag
    server = sftp_server
    root = server.mkdir(f"secrets-{tag}")
    key_text = server.user_key_encrypted.read_text()
    whsec, token = new_secret(), f"tok-{uuid.uuid4().hex}"
    basic_user, basic_pw = "hookuser", f"basic-{uuid.uuid4().hex}"
    smtp_pw = f"smtp-{uuid.uuid4().hex}"
    bearer_hook = Receiver([whsec], bearer=token)
    basic_hook = Receiver([whsec], basic=(basic_user, basic_pw))
    smtp = SmtpServer(password=smtp_pw)
    s3 = moto_s3_server.auth  # checks signatures: a wrong secret really fails
    bucket = f"secrets-{tag}"
    s3.client().create_bucket(Bucket=bucket)
    wrong = {name: f"wrong-{name}-{uuid.uuid4().hex}" for name in ("sftp", "passphrase", "token", "basic", "s3", "smtp")}
    try:
        sftp = dict(host=server.host, port=server.port, username=server.user, host_key=server.known_hosts_line,
                    base_folder=str(root), connect_timeout=10, timeout=10)

        def s3_conn(secret):
            return S3Connection(bucket_name=bucket, credentials=AwsCredentials(
                aws_access_key_id=s3.key_id, aws_secret_access_key=secret, region_name=REGION,
                aws_client_parameters={"endpoint_url": s3.url}))

        def smtp_conn(password):
            return SmtpConnection(host="127.0.0.1", port=smtp.port, security="none", username=SMTP_USER,
                                  password=password, from_address="docroute@example.test", timeout=10)

        blocks = {  # name -> (block that works, block that fails on its secret)
            "sftp-pw": (SftpConnection(**sftp, password=server.password), SftpConnection(**sftp, password=wrong["sftp"])),
            "sftp-key": (SftpConnection(**sftp, private_key=key_text, private_key_passphrase=server.key_passphrase),
                         SftpConnection(**sftp, private_key=key_text, private_key_passphrase=wrong["passphrase"])),
            "hook-bearer": (WebhookConnection(url=bearer_hook.url, signing_secrets=[whsec], auth="bearer", bearer_token=token),
                            WebhookConnection(url=bearer_hook.url, signing_secrets=[whsec], auth="bearer", bearer_token=wrong["token"])),
            "hook-basic": (WebhookConnection(url=basic_hook.url, signing_secrets=[whsec], auth="basic", username=basic_user, password=basic_pw),
                           WebhookConnection(url=basic_hook.url, signing_secrets=[whsec], auth="basic", username=basic_user, password=wrong["basic"])),
            "s3": (s3_conn(s3.secret), s3_conn(wrong["s3"])),
            "smtp": (smtp_conn(smtp_pw), smtp_conn(wrong["smtp"])),
        }
        refs, keys = [], []
        for name, (good, bad) in blocks.items():
            for variant, block in (("ok", good), ("bad", bad)):
                block_name = f"{name}-{variant}-{tag}"
                block.save(block_name)
                ref = f"{block.get_block_type_slug()}/{block_name}"
                options = {"to": ["ap@client.example"]} if name == "smtp" else {}
                keys.append(workspace.integration(f"{name}-{variant}", connection=ref, connection_options=options))
                refs.append(ref)
        now = datetime.now(timezone.utc)
        for i in range(2):
            write_document(workspace.inbox, f"SEC-{i}", client="acme", approved_at=now - timedelta(hours=1),
                           metadata={"number": f"N{i}", "supplier": "Initech"})

        states = {key: sync(integration=key, return_state=True) for key in keys}
        check = check_connections(connections=refs, return_state=True)
        for key, state in states.items():  # the runs really did what they are meant to
            assert state.is_completed() == key.endswith("-ok"), (key, state.message)
        assert check.is_failed()
        assert sum(1 for r in (bearer_hook, basic_hook) for d in r.deliveries.values()) == 4
        assert len(smtp.messages) == 2 and sorted(p.name for p in (root / "acme/invoice").iterdir()) == ["SEC-0.pdf", "SEC-1.pdf"]
        assert len([k for k in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]) == 2
        raised = []
        for state in [*states.values(), check]:
            exc = state.result(raise_on_failure=False)
            if isinstance(exc, BaseException):
                raised.append("".join(traceback.format_exception(exc)))
        assert len(raised) == 7  # six failing syncs and the check run
        for needle in ("sftp-connection/sftp-pw-bad", "sftp-connection/sftp-key-bad", "private_key_passphrase",
                       "answered 401", "SignatureDoesNotMatch", "login as"):
            assert needle in "".join(raised), needle  # the failures name the connection and what is wrong

        APILogWorker.drain_all(timeout=10)
        run_ids = [s.state_details.flow_run_id for s in [*states.values(), check]]
        shown = asyncio.run(_server_view(run_ids))
        ledger = workspace.ledger()
        stored = json.dumps([[list(map(str, r.values())) for r in ledger.rows(k)] + [list(map(str, e.values())) for e in ledger.events_of(k)]
                             for k in keys], ensure_ascii=False)
        console = capsys.readouterr()
        texts = {"server": shown, "ledger": stored, "exceptions": "\n".join(raised),
                 "console": console.out + console.err + caplog.text}
        # the scan reads real data: logs, artifacts, failed states' messages, ledger rows
        assert "documents to look at" in shown and "connection-checks" in shown and "cannot open connection" in shown
        assert "SEC-1" in shown and "SEC-1" in stored

        secrets = [server.password, server.key_passphrase, whsec, whsec.removeprefix("whsec_"), token, basic_pw,
                   s3.secret, smtp_pw, *wrong.values()]
        forms = set().union(*(encoded_forms(s) for s in secrets))
        forms |= {base64.b64encode(f"{basic_user}:{pw}".encode()).decode() for pw in (basic_pw, wrong["basic"])}  # basic auth
        forms |= {base64.b64decode(whsec.removeprefix("whsec_")).hex()}
        forms |= {line for line in key_text.splitlines() if len(line) >= 40}  # any line of the private key
        revealed = asyncio.run(_everything_the_server_shows("no-such-run"))[1]
        for s in (server.password, server.key_passphrase, whsec, token, basic_pw, s3.secret, smtp_pw, *wrong.values()):
            assert s in revealed  # the blocks really hold what the scan looks for
        for where, text in texts.items():
            leaked = sorted(f for f in forms if f in text)
            assert leaked == [], f"secret material in {where}: {leaked}"
    finally:
        bearer_hook.stop()
        basic_hook.stop()
        smtp.stop()
