"""Notifications: automations on the real Prefect test server (whose triggers and actions services
run in-process with it), parked-document events, and the failure e-mail hook against aiosmtpd."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter

from blocks.smtp import SmtpConnection
from deployments.config import ConfigError, load_config
from flows.cli import main as cli
from flows.notify import FAILED_AUTOMATION, PARKED_AUTOMATION, PARKED_EVENT, MAX_LISTED, RETIRED_AUTOMATIONS, RUN_PARKED_EVENT, automations
from flows.sync import SyncFailed, sync
from tasks.ledger import NEEDS_ATTENTION
from tasks.settings import get_settings
from tasks.sources.seed import write_document
from tests.connectors.harness_email import USER, SmtpServer

NOW = lambda: datetime.now(timezone.utc)  # noqa: E731


class Inbox:
    """A local HTTP endpoint the notification block posts to; keeps each JSON body."""

    def __init__(self):
        self.bodies: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                inbox.bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/notify"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wait_for(self, predicate, timeout=90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if predicate(body):
                    return body
            time.sleep(0.25)
        raise AssertionError(f"no matching notification within {timeout}s; got {self.bodies}")

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _delete_automations():
    with get_client(sync_client=True) as client:
        for name in (FAILED_AUTOMATION, PARKED_AUTOMATION):
            for a in client.read_automations_by_name(name):
                client.delete_automation(a.id)


@pytest.fixture
def notify_hook(workspace):
    """A custom-webhook notification block posting {subject, body} to a local receiver."""
    inbox = Inbox()
    name = f"ops-{workspace.tag}"
    CustomWebhookNotificationBlock(
        name="docroute ops", url=inbox.url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    ).save(name)
    yield inbox, f"custom-webhook/{name}"
    _delete_automations()  # the session server is shared: later failing runs must not notify
    inbox.stop()


def _bad_doc(ws, doc_id):
    write_document(ws.inbox, doc_id, client="acme", approved_at=NOW() - timedelta(hours=1), pdf=b"")  # empty PDF: permanent


def test_setup_creates_both_automations_once_with_the_right_triggers(notify_hook, capsys):
    _, block = notify_hook
    block_id = CustomWebhookNotificationBlock.load(block.split("/", 1)[1])._block_document_id
    retired = automations(block_id)[1].model_copy(update={"name": RETIRED_AUTOMATIONS[0]})
    with get_client(sync_client=True) as client:  # what an earlier version set up: one notification per document
        for old in client.read_automations_by_name(RETIRED_AUTOMATIONS[0]):
            client.delete_automation(old.id)
        client.create_automation(retired)
    assert cli(["notify", "setup", "--block", block]) == 0
    assert cli(["notify", "setup", "--block", block]) == 0  # again: updated, not duplicated
    out = capsys.readouterr().out
    assert out.count("created:") == 2 and out.count("updated:") == 2 and out.count("deleted:") == 1
    with get_client(sync_client=True) as client:
        failed = client.read_automations_by_name(FAILED_AUTOMATION)
        parked = client.read_automations_by_name(PARKED_AUTOMATION)
        assert client.read_automations_by_name(RETIRED_AUTOMATIONS[0]) == []  # it would notify per document
    assert len(failed) == 1 and len(parked) == 1
    trigger = failed[0].trigger
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    related = trigger.match_related if isinstance(trigger.match_related, list) else [trigger.match_related]
    assert [r.model_dump() for r in related] == [{"prefect.resource.role": "flow", "prefect.resource.name": "docroute-sync"}]
    assert parked[0].trigger.expect == {RUN_PARKED_EVENT}
    for automation in (failed[0], parked[0]):
        assert automation.enabled and automation.trigger.posture == "Reactive" and automation.trigger.threshold == 1
        (action,) = automation.actions
        assert action.type == "send-notification" and action.block_document_id == block_id


def test_setup_refuses_a_block_that_cannot_notify(workspace, capsys):
    assert cli(["notify", "setup", "--block", workspace.connection_ref]) == 2
    assert "cannot send notifications" in capsys.readouterr().err
    assert cli(["notify", "setup", "--block", "custom-webhook/no-such-block"]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_failed_run_and_its_parked_documents_notify_through_the_webhook_once(workspace, notify_hook):
    inbox, block = notify_hook
    assert cli(["notify", "setup", "--block", block]) == 0
    key = workspace.integration(name=f"notified-{workspace.tag}", max_attempts=1)
    bad = [f"NOTE-BAD-{i:02d}" for i in range(MAX_LISTED + 2)]  # a mass failure
    for doc_id in bad:
        _bad_doc(workspace, doc_id)
    state = sync(integration=key, return_state=True)
    assert state.is_failed()
    assert {r["status"] for r in workspace.ledger().rows(key)} == {NEEDS_ATTENTION}  # parked at once (max_attempts 1)

    # 1. the events reached the server: one per document, one for the run listing them
    def events_of(name):
        with get_client(sync_client=True) as client:
            return [e for e in client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50).events
                    if e.resource.get("docroute.integration") == key]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (len(events_of(PARKED_EVENT)) == len(bad) and events_of(RUN_PARKED_EVENT)):
        time.sleep(0.5)
    per_doc = events_of(PARKED_EVENT)
    assert sorted(e.resource.id for e in per_doc) == [f"docroute.document.acme-notified-{workspace.tag}.{d}" for d in bad]
    assert all("is empty" in e.payload["error"] for e in per_doc)
    assert any(str(r.id) == f"prefect.flow-run.{state.state_details.flow_run_id}" for r in per_doc[0].related)
    (run_event,) = events_of(RUN_PARKED_EVENT)
    assert run_event.resource.id == f"docroute.integration.acme-notified-{workspace.tag}"
    assert run_event.payload["count"] == len(bad) and run_event.payload["more"] == 2
    assert sorted(d["id"] for d in run_event.payload["documents"]) == bad[:MAX_LISTED]

    # 2. the server's automations posted the failed run, and ONE notification for the parked documents
    failed = inbox.wait_for(lambda b: key in b["subject"] and "Failed" in b["subject"])
    assert "NOTE-BAD-01" in failed["body"] and "is empty" in failed["body"]  # the state message names document and error
    parked = inbox.wait_for(lambda b: key in b["subject"] and f"parked {len(bad)} documents: NOTE-BAD-00 and more" in b["subject"])
    assert f"... and 2 more: docroute parked list {key}" in parked["body"]
    assert "NOTE-BAD-20" not in parked["body"] and "NOTE-BAD-21" not in parked["body"]
    for doc_id in bad[:MAX_LISTED]:
        assert f"\n- {doc_id}: document {doc_id}: {doc_id}.pdf is empty (0 bytes)" in parked["body"]  # no number: unreadable
    assert f"docroute parked retry {key} --all" in parked["body"]
    time.sleep(3)  # long enough for per-document notifications, had there been any
    assert len([b for b in inbox.bodies if key in b["subject"] and "parked" in b["subject"]]) == 1


# -- the e-mail hook ----------------------------------------------------------------
@pytest.fixture
def smtp(workspace):
    server = SmtpServer(password=f"pw-{workspace.tag}-s3cr3t")
    name = f"ops-mail-{workspace.tag}"
    SmtpConnection(
        host="127.0.0.1", port=server.port, security="none", username=USER, password=server.password,
        from_address="docroute@example.test", timeout=5,
    ).save(name)
    yield server, f"smtp-connection/{name}"
    server.stop()


def test_a_failed_run_emails_the_integrations_recipients(workspace, smtp, monkeypatch):
    server, ref = smtp
    monkeypatch.setenv("DOCROUTE_NOTIFY_EMAIL", "all-failures@ops.example")
    get_settings.cache_clear()
    key = workspace.integration(name="mailed", notify={"email": ["ops@client.example"], "smtp": ref})
    write_document(workspace.inbox, "MAIL-OK", client="acme", approved_at=NOW() - timedelta(hours=1))
    _bad_doc(workspace, "MAIL-BAD")
    state = sync(integration=key, return_state=True)
    assert state.is_failed() and "MAIL-BAD" in state.message  # the run's own failure is unchanged

    (stored,) = server.messages
    assert sorted(stored.rcpt_tos) == ["all-failures@ops.example", "ops@client.example"]
    msg = stored.message
    assert msg["Subject"].startswith(f"docroute: {key} sync Failed")
    body = msg.get_content()
    assert key in body and str(state.state_details.flow_run_id) in body
    assert "MAIL-BAD: failed after 1 attempt(s)" in body and "is empty" in body
    assert "MAIL-OK" not in body.split("Documents that failed")[1]  # only the failed ones are listed
    assert server.password not in stored.content.decode()


def test_the_email_hook_never_hides_the_runs_failure(workspace, smtp, caplog):
    server, ref = smtp
    server.stop()  # the SMTP server is down
    key = workspace.integration(name="mail-down", notify={"email": ["ops@client.example"], "smtp": ref})
    _bad_doc(workspace, "DOWN-BAD")
    with pytest.raises(SyncFailed, match="DOWN-BAD"):
        sync(integration=key)
    assert any("failure e-mail not sent" in r.getMessage() for r in caplog.records)
    assert not any(server.password in r.getMessage() for r in caplog.records)


def test_a_successful_run_sends_no_email(workspace, smtp):
    server, ref = smtp
    key = workspace.integration(name="mail-quiet", notify={"email": ["ops@client.example"], "smtp": ref})
    write_document(workspace.inbox, "QUIET-1", client="acme", approved_at=NOW() - timedelta(hours=1))
    assert sync(integration=key)["outcomes"][0]["status"] == "delivered"
    assert server.messages == []


def test_notify_settings_are_validated(workspace, smtp):
    _, ref = smtp
    workspace.integration(name="no-smtp", notify={"email": ["ops@client.example"]})
    workspace.integration(name="bad-address", notify={"email": ["not an address"], "smtp": ref})
    workspace.integration(name="missing-block", notify={"email": ["ops@client.example"], "smtp": "smtp-connection/nope"})
    workspace.integration(name="nobody", notify={"smtp": ref})
    with pytest.raises(ConfigError) as info:
        load_config()
    text = str(info.value)
    assert "integration 'no-smtp': notify.smtp: e-mail recipients need an SMTP connection" in text
    assert "integration 'bad-address': notify.email: Value error, 'not an address': must be one plain e-mail address" in text
    assert "integration 'missing-block': notify.smtp:" in text and "nope" in text
    assert "integration 'nobody': notify.email: notify.smtp is set but nobody is e-mailed" in text


def test_a_clients_notify_section_is_every_integrations_default(workspace, smtp):
    from deployments.config import parse_config

    _, ref = smtp
    workspace.clients.setdefault("acme", {"client": "acme", "identifiers": {}, "integrations": []})["notify"] = {
        "email": ["ap-team@acme.example"], "smtp": ref,
    }
    workspace.integration(name="inherits", mapping={"folder": "a", "filename": "{doc_id}.{ext}"})
    workspace.integration(name="own", notify={"email": ["own@acme.example"], "smtp": ref}, mapping={"folder": "b", "filename": "{doc_id}.{ext}"})
    config, problems = parse_config(workspace.config_dir)
    assert problems == []
    assert config.get("acme/inherits").notify.email == ["ap-team@acme.example"]
    assert config.get("acme/own").notify.email == ["own@acme.example"]


CRASH_RUNNER = """
from flows.sync import sync
sync(integration={key!r})
"""


def test_a_crashed_run_is_emailed_too(workspace, smtp):
    """SIGTERM while a document is being sent: the run ends Crashed and the on_crashed hook e-mails."""
    import os
    import signal
    import subprocess
    import sys

    from blocks.webhook import WebhookConnection
    from tests.connectors.harness_webhook import Receiver, Scripted, new_secret

    server, ref = smtp
    secret = new_secret()
    receiver = Receiver([secret])
    try:
        receiver.script(Scripted(200, delay=15))  # the receiver hangs on the first document
        WebhookConnection(url=receiver.url, signing_secrets=[secret], timeout=30).save(f"slow-{workspace.tag}")
        key = workspace.integration(
            name="crashes", connection=f"webhook-connection/slow-{workspace.tag}", notify={"email": ["ops@client.example"], "smtp": ref}
        )
        write_document(workspace.inbox, "CRASH-1", client="acme", approved_at=NOW() - timedelta(hours=1))
        proc = subprocess.Popen([sys.executable, "-c", CRASH_RUNNER.format(key=key)], env=workspace.env(), cwd=os.getcwd())
        deadline = time.monotonic() + 120
        while not receiver.attempts and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert receiver.attempts, "the run never reached the receiver"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        receiver.stop()
    (stored,) = server.messages
    assert stored.message["Subject"].startswith(f"docroute: {key} sync Crashed")
    assert key in stored.message.get_content()
