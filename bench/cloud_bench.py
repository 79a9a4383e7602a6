"""Cloud folders and SMB: many small documents and a few big ones to each local fake (and Samba).

    python bench/cloud_bench.py                          # 1,000 x 50 KB and 20 x 20 MB to Dropbox, Graph, Drive (+ SMB as root)
    python bench/cloud_bench.py --docs 20 --big 2        # a smoke run
    python bench/cloud_bench.py --only dropbox,gdrive --transfers 4

Each fake (tests/fakes/dropbox_api.py, graph_api.py, drive_api.py) runs in a child process, so the
memory measured is the connector's alone: the peak resident set of this process (ru_maxrss) before
and after each phase. Documents are delivered as the sync engine sends them (`transfers` at once
where the connector is thread-safe), through the connector built from its block, at the default
upload thresholds: 20 MB files go through upload sessions (Dropbox: 150 MB simple limit, so one
call; Graph: one PUT up to 250 MB; Drive: resumable above 5 MB), so `--big-session` lowers the
thresholds to make the big files go in sessions everywhere. Per provider: wall time, documents
per second, HTTP requests per document (as the fake counted them) and the peak memory growth of
each phase. Targets: memory flat as files grow (the 20 MB phase adds < 100 MB, i.e. never a whole
file per transfer), and at most 2 requests per small document (Drive: a query for the idempotency
key, then the upload). Results go to bench/results/cloud_bench.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import machine, print_table, verdict, write_result  # noqa: E402

MB = 1024 * 1024


class _Count(list):
    """A request log that only counts (the fake keeps no bodies: its memory stays small)."""

    n = 0

    def append(self, item) -> None:
        self.n += 1


def _serve(kind: str, pipe) -> None:
    """Child process: one fake, answering the parent's commands over `pipe`."""
    if kind == "dropbox":
        from tests.fakes.dropbox_api import DropboxAPI

        fake = DropboxAPI().start()
        fake.mkdir("/bench")
        info = dict(client_id=fake.app_key, client_secret=fake.app_secret, refresh_token=fake.refresh_token,
                    token_url=f"{fake.url}/oauth2/token", api_url=fake.url, content_url=fake.url, ca_bundle=fake.ca_bundle,
                    folder="/bench")
    elif kind == "onedrive":
        from tests.fakes.graph_api import GraphAPI

        fake = GraphAPI().start()
        fake.mkdir("/bench")
        info = dict(tenant=fake.tenant, client_id=fake.client_id, client_secret=fake.client_secret, authority_host=fake.url,
                    graph_url=f"{fake.url}/v1.0", ca_bundle=fake.ca_bundle, drive_id=fake.drive_id, folder="/bench")
    else:
        import json

        from tests.fakes.drive_api import DriveAPI

        fake = DriveAPI().start()
        folder = fake.folder(fake.root_of("ap@acme.example"), "bench")
        info = dict(auth="service_account", service_account_key=json.dumps(fake.service_account_info()),
                    delegated_user="ap@acme.example", api_endpoint=f"{fake.url}/drive/v3/", ca_bundle=fake.ca_bundle,
                    folder_id=folder)
    fake.requests = _Count()
    pipe.send(info)
    while True:
        command = pipe.recv()
        if command == "count":
            pipe.send(fake.requests.n)
        else:
            fake.stop()
            fake.blobs.cleanup()
            pipe.send("stopped")
            return


def _packages(folder: Path, n: int, size: int, prefix: str):
    from tests.connectors.conformance import make_package

    return [make_package(folder, f"{prefix}-{i:04d}", pdf_size=size, with_xml=False, with_sidecar=False,
                         folder="acme/2026/11", integration=f"bench/{uuid.uuid4().hex[:6]}") for i in range(n)]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _send(connector, packages, transfers: int) -> None:
    from tasks.connectors.base import Ability

    workers = min(transfers, connector.parallelism) if Ability.PARALLEL in connector.abilities else 1
    with ThreadPoolExecutor(workers) as pool:
        for delivery in pool.map(connector.deliver, packages):
            assert delivery.remote_ref


def run(kind: str, small, big, transfers: int, big_session: bool) -> dict:
    child = None
    if kind == "smb":
        from blocks.smb import SmbConnection
        from tests.smbd import start_smbd

        server = start_smbd()
        server.mkdir("docs", "bench")
        block = SmbConnection(host=server.host, port=server.port, share="docs", username=server.user, password=server.password,
                              base_folder="bench")
        count = None
    else:
        parent, child_end = mp.Pipe()
        child = mp.get_context("spawn").Process(target=_serve, args=(kind, child_end), daemon=True)
        child.start()
        info = parent.recv()
        if kind == "dropbox":
            from blocks.dropbox import DropboxConnection as cls

            info.update(transfers=min(transfers, 8), **({"simple_upload_max": 8 * MB} if big_session else {}))
        elif kind == "onedrive":
            from blocks.onedrive import OneDriveConnection as cls

            info.update(transfers=transfers, **({"simple_upload_max": 8 * MB} if big_session else {}))
        else:
            from blocks.gdrive import GoogleDriveConnection as cls

            info.update(transfers=transfers)
        block = cls(**info)

        def count() -> int:
            parent.send("count")
            return parent.recv()
    out: dict = {"provider": kind}
    try:
        with block.connector() as connector:
            base = _peak_mb()
            for phase, packages in (("small", small), ("big", big)):
                if not packages:
                    continue
                before = count() if count else None
                started = time.perf_counter()
                _send(connector, packages, transfers)
                wall = time.perf_counter() - started
                peak = _peak_mb()
                out[phase] = {
                    "docs": len(packages), "mb_each": round(packages[0].main.size / MB, 2), "wall_s": round(wall, 2),
                    "docs_per_s": round(len(packages) / wall, 1),
                    "requests_per_doc": round((count() - before) / len(packages), 2) if count else None,
                    "peak_growth_mb": round(peak - base, 1), "peak_mb": round(peak, 1),
                }
                base = peak
    finally:
        if child is not None:
            parent.send("stop")
            parent.recv()
            child.join(10)
        else:
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1000, help="small documents (default 1000)")
    ap.add_argument("--size", type=int, default=50 * 1024, help="bytes per small document (default 50 KB)")
    ap.add_argument("--big", type=int, default=20, help="big documents (default 20)")
    ap.add_argument("--big-size", type=int, default=20 * MB, help="bytes per big document (default 20 MB)")
    ap.add_argument("--transfers", type=int, default=4, help="documents sent at once (default 4)")
    ap.add_argument("--big-session", action="store_true", help="send the big files through upload sessions everywhere")
    ap.add_argument("--only", default="dropbox,onedrive,gdrive" + (",smb" if os.geteuid() == 0 else ""),
                    help="providers, comma-separated (smb needs root: it starts Samba)")
    args = ap.parse_args()
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # they override the token session's ca_bundle (tests/fakes/cloud_common.py)
        os.environ.pop(name, None)
    work = Path(tempfile.mkdtemp(prefix="docroute-cloud-bench-"))
    try:
        small = _packages(work, args.docs, args.size, "S")
        big = _packages(work, args.big, args.big_size, "B")
        results = [run(kind, small, big, args.transfers, args.big_session) for kind in args.only.split(",") if kind]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for r in results:
        for phase in ("small", "big"):
            if phase in r:
                p = r[phase]
                flat = p["peak_growth_mb"] < 100 if phase == "big" else None
                few = (p["requests_per_doc"] <= 2) if phase == "small" and p["requests_per_doc"] is not None else None
                rows.append((r["provider"], f"{p['docs']} x {p['mb_each']} MB", p["wall_s"], p["docs_per_s"],
                             "-" if p["requests_per_doc"] is None else p["requests_per_doc"], p["peak_growth_mb"],
                             verdict(flat if flat is not None else few)))
    print_table(f"cloud folders and SMB, {args.transfers} transfers (targets: <= 2 requests per small document; "
                f"big files add < 100 MB)", rows,
                ("provider", "documents", "wall s", "docs/s", "requests/doc", "peak growth MB", "target"))
    path = write_result("cloud_bench", {"machine": machine(), "args": vars(args), "results": results})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
