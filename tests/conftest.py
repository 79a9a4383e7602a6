"""Shared fixtures: one real Prefect server per test session, and an isolated docroute workspace."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

# The real servers, one each per test session, shared by the connector and source suites and the flow tests.
from tests.connectors.harness_s3 import moto_s3_server  # noqa: F401 - fixture
from tests.connectors.harness_sftp import sftp_server  # noqa: F401 - fixture
from tests.prefect_server import start_prefect_server


# The suite runs in two processes, each test file whole in one (pyproject.toml: -n 2 --dist loadfile
# --no-loadscope-reorder). The files that take minutes go first, so that both processes end together
# instead of one running the longest file alone at the end.
SLOW_FILES = ("tests/test_scale_out.py", "tests/test_worker.py", "tests/test_demo.py", "tests/faults/test_infor_faults.py",
              "tests/faults/test_einvoicing_faults.py")


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server (SQLite, every service, the UI) for the whole session; this process and its
    subprocesses reach it via PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = start_prefect_server()
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            from tasks.registry import register_block_types

            register_block_types()
            yield server.url
            # Send what is still queued while the server is up: Prefect's exit-time drain would otherwise
            # retry a stopped server for about a minute before the session can end.
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
    finally:
        server.stop()
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old


@pytest.fixture(scope="session")
def prefect_ui(prefect_server) -> str:
    """The session server's UI, e.g. http://127.0.0.1:4321."""
    return prefect_server.removesuffix("/api")


@dataclass
class Workspace:
    """An inbox, a destination folder, a ledger and a config folder, with blocks saved under unique names."""

    root: Path
    inbox: Path
    out: Path
    config_dir: Path
    ledger_url: str
    tag: str
    clients: dict[str, dict] = field(default_factory=dict)

    @property
    def source_ref(self) -> str:
        return f"capture-inbox-folder/inbox-{self.tag}"

    @property
    def connection_ref(self) -> str:
        return f"local-folder-connection/out-{self.tag}"

    def integration(self, name: str = "invoices", client: str = "acme", **overrides) -> str:
        """Add an integration to the client's file; returns its key."""
        spec = {
            "name": name,
            "source": self.source_ref,
            "connection": self.connection_ref,
            "activated_at": "2026-01-01T00:00:00Z",
            "lookback": "1d",
            "retry_delay": 0.05,
            "mapping": {"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}"},
        }
        spec.update(overrides)
        data = self.clients.setdefault(client, {"client": client, "identifiers": {"external_id": "EXT1"}, "integrations": []})
        data["integrations"] = [i for i in data["integrations"] if i["name"] != name] + [spec]
        (self.config_dir / "clients" / f"{client}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return f"{client}/{name}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCROUTE_CONFIG_DIR": str(self.config_dir),
            "DOCROUTE_LEDGER_URL": self.ledger_url,
            "DOCROUTE_HOME": str(self.root / "home"),
        }

    def ledger(self):
        from tasks.ledger import Ledger

        return Ledger(self.ledger_url)


@pytest.fixture
def workspace(tmp_path, prefect_server, monkeypatch) -> Workspace:
    from blocks.capture_inbox import CaptureInboxFolder
    from blocks.local_folder import LocalFolderConnection
    from tasks.settings import get_settings

    tag = uuid.uuid4().hex[:10]
    ws = Workspace(
        root=tmp_path,
        inbox=tmp_path / "inbox",
        out=tmp_path / "out",
        config_dir=tmp_path / "config",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        tag=tag,
    )
    for d in (ws.inbox, ws.out, ws.config_dir / "clients", ws.config_dir / "templates", ws.config_dir / "lookups"):
        d.mkdir(parents=True)
    CaptureInboxFolder(path=str(ws.inbox), settle_seconds=1.0).save(f"inbox-{tag}")
    LocalFolderConnection(base_folder=str(ws.out), test_folder=str(tmp_path / "out-test")).save(f"out-{tag}")
    for key, value in ws.env().items():
        if key.startswith("DOCROUTE_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield ws
    get_settings.cache_clear()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def confirmations(ws, key):
    """doc_id -> number of times the ledger recorded a confirmed delivery."""
    out: dict[str, int] = {}
    for e in ws.ledger().events_of(key):
        if e["event"] in ("delivered", "already-present"):
            out[e["doc_id"]] = out.get(e["doc_id"], 0) + 1
    return out


_opened: list[str] | None = None  # where opened_files() records, while one is active


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None:
        _opened.append(str(args[0]))


@contextlib.contextmanager
def opened_files():
    """The paths this process opens meanwhile (any thread), seen by a Python audit hook: what really
    happens, nothing replaced. The hook stays installed (they cannot be removed) but records nothing
    outside this block."""
    global _opened
    if not getattr(_audit, "installed", False):
        sys.addaudithook(_audit)
        _audit.installed = True
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None
