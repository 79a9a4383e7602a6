"""Faults at the cloud-folder and SMB destinations, through the sync flow: a sync process killed
with SIGKILL mid-run then finished by the next run, and connections cut during upload sessions
(the answer to a commit lost, a fragment or chunk cut). Afterwards: one file per document version at
each destination, byte-identical to its source, each recorded delivered exactly once, and
reconcile finds no difference."""

from __future__ import annotations

import random
import signal
import time

import pytest

from flows.sync import sync
from tests.conftest import confirmations
from tests.connectors.harness_dropbox import dropbox_connection, dropbox_fake
from tests.connectors.harness_gdrive import drive_fake, gdrive_connection
from tests.connectors.harness_onedrive import graph_fake, onedrive_connection
from tests.connectors.harness_smb import smb_connection, smb_server
from tests.fakes.base import Fault
from tests.fakes.drive_api import CHUNK
from tests.fakes.graph_api import FRAGMENT, cut_fragment
from tests.faults.helpers import assert_reconciles, seed_docs
from tests.test_sync_flow import start_sync_process

DOCS = 60
KB = 1024


class Destination:
    """One destination of the fault tests: a connection block for it, and what it holds."""

    def __init__(self, kind: str, ws, **overrides):
        self.kind, self.ws = kind, ws
        tag = ws.tag
        if kind == "dropbox":
            self.fake = dropbox_fake()
            self.folder = f"/sync-{tag}"
            self.fake.mkdir(self.folder)
            self.block = dropbox_connection(self.fake, self.folder, **overrides)
        elif kind == "onedrive":
            self.fake = graph_fake()
            self.folder = f"/sync-{tag}"
            self.fake.mkdir(self.folder)
            self.block = onedrive_connection(self.fake, self.folder, **overrides)
        elif kind == "gdrive":
            self.fake = drive_fake()
            self.folder = self.fake.folder(self.fake.root_of("ap@acme.example"), f"sync-{tag}")
            self.block = gdrive_connection(self.fake, self.folder, **overrides)
        else:
            self.server = smb_server()
            self.root = self.server.mkdir("docs", f"sync-{tag}")
            self.block = smb_connection(self.server, self.root.name, **overrides)
            self.fake = None
        if self.fake is not None:
            self.fake.clear_faults()
        self.slug = self.block.get_block_type_slug()
        self.block.save(f"{kind}-{tag}", overwrite=True)
        self.ref = f"{self.slug}/{kind}-{tag}"

    def files(self) -> dict[str, list[bytes]]:
        """name -> the contents of every file of that name in acme/invoice (Drive may hold twins)."""
        if self.kind in ("dropbox", "onedrive"):
            prefix = f"{self.folder}/acme/invoice/"
            return {p[len(prefix):]: [self.fake.file(p)] for p in self.fake.files_under(self.folder) if p.startswith(prefix)}
        if self.kind == "gdrive":
            parent = self.folder
            for part in ("acme", "invoice"):
                found = [f for f in self.fake.children(parent, part) if f.mimeType.endswith("folder")]
                assert len(found) <= 1, f"twin folders {part}"
                if not found:
                    return {}
                parent = found[0].id
            out: dict[str, list[bytes]] = {}
            for f in self.fake.children(parent):
                out.setdefault(f.name, []).append(self.fake.content(f))
            return out
        folder = self.root / "acme" / "invoice"
        return {p.name: [p.read_bytes()] for p in folder.iterdir()} if folder.is_dir() else {}

    def delivered(self) -> int:
        try:
            return sum(1 for n in self.files() if n.endswith(".pdf"))
        except (OSError, RuntimeError, KeyError):  # a listing racing a write
            return 0


def assert_one_file_per_document(ws, key: str, dest: Destination, ids: list[str]) -> None:
    files = dest.files()
    assert [n for n in files if n.startswith(".")] == [], "temp or partial files left behind"
    assert sorted(files) == sorted(f"{i}.pdf" for i in ids)
    for doc_id in ids:
        assert files[f"{doc_id}.pdf"] == [(ws.inbox / f"{doc_id}.pdf").read_bytes()], doc_id  # one file, whole
    assert confirmations(ws, key) == {i: 1 for i in ids}
    assert {r["doc_id"]: r["status"] for r in ws.ledger().rows(key)} == {i: "delivered" for i in ids}


@pytest.mark.parametrize("kind", ["dropbox", "onedrive", "gdrive", "smb"])
def test_sigkill_mid_run_then_the_next_run_leaves_one_file_per_document(workspace, kind):
    dest = Destination(kind, workspace)
    key = workspace.integration(connection=dest.ref, throttle_per_second=15)
    ids = seed_docs(workspace, DOCS, pdf_size=8_000)
    proc = start_sync_process(workspace, key)
    target = random.Random(kind).randint(5, DOCS // 2)
    deadline = time.monotonic() + 180
    while dest.delivered() < target:
        assert proc.poll() is None, f"the sync ended before the kill point {target}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    at_kill = dest.delivered()
    assert target <= at_kill < DOCS  # really mid-run
    for name, contents in dest.files().items():  # right after the kill: nothing partial under a final name
        assert len(contents) == 1 and contents[0] == (workspace.inbox / name).read_bytes(), name
    sync(integration=key)
    assert_one_file_per_document(workspace, key, dest, ids)
    assert_reconciles(key, n_files=DOCS)


SESSION_FAULTS = {
    # the commit went through, its answer was lost; then an append cut before it arrived
    "dropbox": (dict(simple_upload_max=100 * KB, chunk_size=64 * KB),
                [Fault(kind="cut-after", match=r"upload_session/finish", times=2),
                 Fault(kind="cut", match=r"upload_session/append_v2", times=2)]),
    # fragments cut on their way, and one whose answer was lost after it was stored
    "onedrive": (dict(simple_upload_max=100 * KB, fragment_size=FRAGMENT),
                 [cut_fragment(times=2), Fault(kind="cut-after", times=2,
                                               match=lambda r: r.method == "PUT" and r.path.startswith("/upload/"))]),
    # chunks whose answers were lost (the last one's too: the file was created)
    "gdrive": (dict(multipart_max=100 * KB, chunk_size=CHUNK),
               [Fault(kind="cut-after", times=4, match=lambda r: r.method == "PUT" and "upload_id" in r.query)]),
}


@pytest.mark.parametrize("kind", sorted(SESSION_FAULTS))
def test_connections_cut_during_upload_sessions_leave_one_file_per_document(workspace, kind):
    overrides, faults = SESSION_FAULTS[kind]
    dest = Destination(kind, workspace, **overrides)
    key = workspace.integration(connection=dest.ref, retries=3, retry_delay=0.05)
    ids = seed_docs(workspace, 6, pdf_size=700_000)  # each one an upload session of several requests
    dest.fake.fault(*faults)
    result = sync(integration=key)
    assert dest.fake.faults == []  # every fault fired
    assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] in ("delivered", "already-present")) == ids
    assert_one_file_per_document(workspace, key, dest, ids)
    assert_reconciles(key, n_files=len(ids))
