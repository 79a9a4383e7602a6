"""Send modes per integration (Business Central's Production / Test / Certification, plus dry-run),
against a real webhook receiver that verifies every request's signature."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from blocks.local_folder import LocalFolderConnection
from blocks.webhook import WebhookConnection
from deployments.config import ConfigError, load_config
from flows.sync import SyncFailed, sync
from tasks.connectors.base import Mode
from tasks.connectors.local_folder import LocalFolderConnector
from tasks.sources.seed import write_document
from tests.connectors.harness_webhook import Receiver, new_secret


@pytest.fixture
def hook(workspace):
    secret = new_secret()
    receiver = Receiver([secret])
    yield receiver, secret
    receiver.stop()


def _save_hook(ws, receiver, secret, suffix="", **overrides) -> str:
    name = f"modes-{ws.tag}{suffix}"
    settings = {"url": receiver.url, "signing_secrets": [secret], "timeout": 5, **overrides}
    WebhookConnection(**settings).save(name)
    return f"webhook-connection/{name}"


def _doc(ws, doc_id):
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    write_document(ws.inbox, doc_id, client="acme", approved_at=when, metadata={"number": doc_id})


def _posts(receiver, path):
    """(docroute-mode header, signed body's mode, document id) of each document POST to `path`."""
    out = []
    for a in receiver.attempts:
        if a.path == path:
            body = json.loads(a.body)
            out.append((a.headers.get("docroute-mode"), body.get("mode"), body["document"]["id"]))
    return out


def test_each_mode_reaches_its_endpoint_and_the_receiver_is_told_the_mode(workspace, hook):
    receiver, secret = hook
    ref = _save_hook(
        workspace, receiver, secret,
        test_url=f"{receiver.base_url}/hooks/test",
        certification_url=f"{receiver.base_url}/hooks/cert",
    )
    _doc(workspace, "MODE-1")
    for mode in ("production", "test", "certification"):
        key = workspace.integration(name=f"to-{mode}", connection=ref, mode=mode)
        result = sync(integration=key)
        assert [o["status"] for o in result["outcomes"]] == ["delivered"], mode

    # every request was signed and verified by the receiver (it answers 401 otherwise)
    assert len(receiver.deliveries) == 3
    assert _posts(receiver, "/hooks/docroute") == [("production", "production", "MODE-1")]
    assert _posts(receiver, "/hooks/test") == [("test", "test", "MODE-1")]
    assert _posts(receiver, "/hooks/cert") == [("certification", "certification", "MODE-1")]


def test_certification_without_its_own_endpoint_goes_to_url_flagged(workspace, hook):
    receiver, secret = hook
    ref = _save_hook(workspace, receiver, secret)  # like Pagero: one endpoint, sendMode in the request
    key = workspace.integration(name="cert", connection=ref, mode="certification")
    _doc(workspace, "CERT-1")
    assert sync(integration=key)["outcomes"][0]["status"] == "delivered"
    assert _posts(receiver, "/hooks/docroute") == [("certification", "certification", "CERT-1")]


def test_test_mode_never_falls_back_to_the_production_endpoint(workspace, hook):
    receiver, secret = hook
    ref = _save_hook(workspace, receiver, secret)  # no test_url
    key = workspace.integration(name="test-no-url", connection=ref, mode="test")
    _doc(workspace, "TEST-1")
    with pytest.raises(SyncFailed, match="TEST-1.*test mode needs test_url"):
        sync(integration=key)
    assert receiver.attempts == []


def test_dry_run_mode_maps_and_reports_without_sending(workspace, hook):
    receiver, secret = hook
    ref = _save_hook(workspace, receiver, secret)
    key = workspace.integration(name="dry", connection=ref, mode="dry-run")
    _doc(workspace, "DRY-1")
    result = sync(integration=key)
    assert [(o["doc_id"], o["status"], o["remote"]) for o in result["outcomes"]] == [("DRY-1", "would-deliver", "acme/invoice/DRY-1.pdf")]
    assert receiver.attempts == []
    assert workspace.ledger().rows(key) == []


def test_certification_on_a_connector_that_does_not_know_it_fails_validation(workspace):
    workspace.integration(name="cert-folder", mode="certification")  # a local-folder connection
    for check_blocks in (True, False):  # `docroute validate` and `docroute validate --offline`
        with pytest.raises(ConfigError) as info:
            load_config(check_blocks=check_blocks)
        problems = [p for p in info.value.problems if "cert-folder" in p]
        assert len(problems) == 1
        problem = problems[0]
        assert "acme.yaml" in problem and "integration 'cert-folder'" in problem and ": mode:" in problem
        assert "local-folder-connection" in problem and "Use mode test" in problem and "webhook-connection" in problem
    # and the run fails before any document is touched
    _doc(workspace, "CF-1")
    state = sync(integration="acme/cert-folder", return_state=True)
    assert state.is_failed() and "certification" in state.message
    assert not any(workspace.out.rglob("*.pdf"))


def test_a_connector_without_certification_refuses_the_mode_when_built_directly(tmp_path):
    with pytest.raises(ValueError, match="does not know certification mode"):
        LocalFolderConnector(LocalFolderConnection(base_folder=str(tmp_path)), Mode.CERTIFICATION)
