"""Benchmark: SFTP export to a real local OpenSSH sshd, docroute against a raw paramiko loop and rclone.

    python bench/sftp_bench.py [--docs 1000] [--size 50000] [--big] [--big-docs 20] [--big-size 20000000]
                               [--repeat 1] [--pool-size 4]

Needs root (it starts sshd with a dedicated test account, see tests/sshd.py). Measured in one run,
against one sshd on 127.0.0.1, the same N PDF files of SIZE bytes:
  (a) raw:      one paramiko connection with TCP_NODELAY, temp name + posix_rename per file;
  (b) rclone:   Debian's rclone `copy`, default settings (4 transfers), key auth, pinned known_hosts;
  (c) docroute: one docroute sync flow run (flows.sync.sync) from a capture inbox to the sshd, with
                the ledger (SQLite) and a temporary Prefect server; the connection's pool_size
                (default 4, like rclone's --transfers) is how many documents it sends at once.
Also reported: the connector path alone, serial `deliver` and `deliver_batch` (pool_size
connections). Connection setup is inside every timing; Prefect server start-up is not.
--repeat K measures (a), (b) and (c) K times, interleaved (each sync run on a fresh ledger and
folder), and reports the best and the median of each; the targets are judged on the medians.
--big adds a memory mode: BIG_DOCS documents of BIG_SIZE bytes through one sync flow run and
through SftpConnector.deliver alone, with the tracemalloc peak and the process's peak RSS growth
during each (VmHWM, reset before each; must stay far below one file).
Writes bench/results/sftp.json and prints a table with the ratios and whether each target is met.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sshd import Sshd, start_sshd  # noqa: E402

TARGET_VS_RCLONE = 0.67
TARGET_VS_RAW = 3.0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return _rss_mb()


def _current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return _rss_mb()


def _count(folder: Path, suffix: str = ".pdf") -> int:
    return sum(1 for p in folder.rglob(f"*{suffix}") if not p.name.startswith("."))


def _block(server: Sshd, folder: Path, **kw):
    """The connection to the bench sshd (password auth, pinned host key)."""
    from blocks.sftp import SftpConnection

    return SftpConnection(
        host=server.host,
        port=server.port,
        username=server.user,
        password=server.password,
        host_key=server.known_hosts_line,
        base_folder=str(folder),
        **kw,
    )


# -- (a) raw paramiko ------------------------------------------------------------------
def bench_raw(server: Sshd, files: list[Path], dest: Path) -> float:
    import paramiko

    t0 = time.perf_counter()
    sock = socket.create_connection((server.host, server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    transport.start_client()
    transport.auth_password(server.user, server.password)
    sftp = paramiko.SFTPClient.from_transport(transport)
    for p in files:
        tmp = f"{dest}/.{p.name}.partial"
        with p.open("rb") as src, sftp.open(tmp, "wb") as fh:
            fh.set_pipelined(True)
            while data := src.read(32768):
                fh.write(data)
        sftp.posix_rename(tmp, f"{dest}/{p.name}")
    sftp.close()
    transport.close()
    return time.perf_counter() - t0


# -- (b) rclone ---------------------------------------------------------------------------
def ensure_rclone() -> str:
    if not shutil.which("rclone"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "rclone"], check=True, env=env, stdout=subprocess.DEVNULL)
    out = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "rclone"


def bench_rclone(server: Sshd, src: Path, dest: Path, work: Path) -> float:
    known_hosts = work / "known_hosts"
    known_hosts.write_text(server.known_hosts_line + "\n")
    config = work / "rclone.conf"
    config.write_text("")  # an empty config of its own: nothing from the user's rclone setup
    env = {
        **os.environ,
        "RCLONE_CONFIG_BENCH_TYPE": "sftp",
        "RCLONE_CONFIG_BENCH_HOST": server.host,
        "RCLONE_CONFIG_BENCH_PORT": str(server.port),
        "RCLONE_CONFIG_BENCH_USER": server.user,
        "RCLONE_CONFIG_BENCH_KEY_FILE": str(server.user_key_plain),
        "RCLONE_CONFIG_BENCH_KNOWN_HOSTS_FILE": str(known_hosts),
    }
    t0 = time.perf_counter()
    subprocess.run(["rclone", "--config", str(config), "copy", str(src), f"bench:{dest}"], check=True, env=env)
    return time.perf_counter() - t0


# -- (c) docroute ---------------------------------------------------------------------------
class FlowBench:
    """Sync flow runs against a temporary Prefect server (started once; its start-up is not timed)."""

    def __init__(self, server: Sshd, work: Path, pool_size: int):
        self.server, self.work, self.pool_size, self.runs = server, work, pool_size, 0

    def __enter__(self) -> FlowBench:
        from prefect.testing.utilities import prefect_test_harness

        self._harness = prefect_test_harness(server_startup_timeout=120)
        self._harness.__enter__()
        from tasks.registry import register_block_types

        register_block_types()
        (self.work / "cfg" / "clients").mkdir(parents=True, exist_ok=True)
        os.environ.update(DOCROUTE_CONFIG_DIR=str(self.work / "cfg"), DOCROUTE_HOME=str(self.work / "home"))
        import flows.sync  # noqa: F401 - imported before any timing

        return self

    def __exit__(self, *exc) -> None:
        self._harness.__exit__(*exc)

    def run(self, inbox: Path, dest: Path, profile_memory: bool = False) -> dict:
        """One sync run of every document in `inbox` to `dest`, on a fresh ledger; wall time (and memory)."""
        from blocks.capture_inbox import CaptureInboxFolder
        from flows.sync import sync
        from tasks.settings import get_settings

        self.runs += 1
        os.environ["DOCROUTE_LEDGER_URL"] = f"sqlite:///{self.work}/ledger-{self.runs}.db"
        get_settings.cache_clear()
        CaptureInboxFolder(path=str(inbox), settle_seconds=0).save("bench-sftp-inbox", overwrite=True)
        _block(self.server, dest, pool_size=self.pool_size).save("bench-sftp", overwrite=True)
        (self.work / "cfg/clients/bench.yaml").write_text(
            "client: bench\nintegrations:\n  - name: invoices-sftp\n    source: capture-inbox-folder/bench-sftp-inbox\n"
            "    connection: sftp-connection/bench-sftp\n    activated_at: 2026-01-01T00:00:00Z\n"
            '    mapping: {folder: "{doc_type}", filename: "{doc_id}.{ext}"}\n'
        )
        out: dict = {}
        if profile_memory:
            gc.collect()
            out["rss_before_mb"] = round(_current_rss_mb(), 1)
            out["peak_reset"] = _reset_peak_rss()
            tracemalloc.start()
        t0 = time.perf_counter()
        sync(integration="bench/invoices-sftp")
        out["wall_s"] = round(time.perf_counter() - t0, 3)
        if profile_memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out["tracemalloc_peak_mb"] = round(peak / 1e6, 2)
            out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
            out["peak_rss_growth_mb"] = round(out["peak_rss_mb"] - out["rss_before_mb"], 1)
        return out


def _packages(files: list[Path], folder: str = ""):
    from tasks.connectors.base import Package, PackageFile

    out = []
    for p in files:
        digest = hashlib.sha256()
        with p.open("rb") as fh:  # streamed: the memory mode must not hold a whole file here either
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
        f = PackageFile(p.name, "document", "application/pdf", p.stat().st_size, digest.hexdigest(),
                        opener=(lambda p=p: p.open("rb")))
        out.append(Package(doc_id=p.stem, version="v1", client="bench", integration="bench/invoices",
                           folder=folder, files=[f]))
    return out


def bench_connector(server: Sshd, files: list[Path], dest: Path, batch: bool) -> float:
    packages = _packages(files)
    t0 = time.perf_counter()
    with _block(server, dest).connector() as connector:
        if batch:
            errors = [r for r in connector.deliver_batch(packages) if isinstance(r, Exception)]
            if errors:
                raise errors[0]
        else:
            for p in packages:
                connector.deliver(p)
    return time.perf_counter() - t0


# -- memory ------------------------------------------------------------------------------------
def _big_inbox(work: Path, docs: int, size: int, name: str = "big-inbox") -> Path:
    """An inbox of `docs` PDFs of `size` bytes, written in 1 MB pieces (never whole in memory)."""
    from tasks.sources.seed import write_document

    inbox = work / name
    chunk = os.urandom(1024 * 1024)
    approved = datetime.now(timezone.utc) - timedelta(minutes=5)
    for i in range(docs):
        doc_id = f"BIG{i:04d}"
        write_document(inbox, doc_id, client="bench", approved_at=approved, pdf=b"%PDF-", settled=False,
                       metadata={"number": doc_id, "supplier": "Globex"})
        with (inbox / f"{doc_id}.pdf").open("wb") as fh:
            fh.write(b"%PDF-1.7\n")
            for _ in range(size // len(chunk)):
                fh.write(chunk)
            fh.write(os.urandom(size % len(chunk)))
    old = time.time() - 3600
    for p in inbox.iterdir():
        os.utime(p, (old, old))
    return inbox


def bench_memory_connector(server: Sshd, inbox: Path, docs: int, size: int) -> dict:
    """The big files through SftpConnector.deliver alone."""
    files = sorted(inbox.glob("*.pdf"))
    dest = server.mkdir("big-connector")
    packages = _packages(files)
    gc.collect()
    rss_before = _current_rss_mb()
    peak_reset = _reset_peak_rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    with _block(server, dest).connector() as connector:
        for p in packages:
            connector.deliver(p)
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    delivered = _count(dest)
    assert delivered == docs, f"memory mode delivered {delivered} of {docs}"
    shutil.rmtree(dest, ignore_errors=True)
    return {
        "docs": docs,
        "size_bytes": size,
        "wall_s": round(wall, 3),
        "mb_per_s": round(docs * size / wall / 1e6, 1),
        "tracemalloc_peak_mb": round(peak / 1e6, 2),
        "peak_reset": peak_reset,
        "peak_rss_growth_mb": round(_peak_rss_mb() - rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def bench_memory_flow(flows: FlowBench, server: Sshd, inbox: Path, docs: int, size: int, tag: str = "big") -> dict:
    """The files of `inbox` through one sync flow run (read, hash, map, send in parallel, ledger)."""
    dest = server.mkdir(f"{tag}-flow")
    out = flows.run(inbox, dest, profile_memory=True)
    delivered = _count(dest)
    assert delivered == docs, f"memory mode (flow) delivered {delivered} of {docs}"
    shutil.rmtree(dest, ignore_errors=True)
    return {"docs": docs, "size_bytes": size, "mb_per_s": round(docs * size / out["wall_s"] / 1e6, 1), **out}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--big", action="store_true", help="also run the memory mode (large documents)")
    parser.add_argument("--big-docs", type=int, default=20)
    parser.add_argument("--big-size", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="measure raw, rclone and the sync run K times each")
    parser.add_argument("--pool-size", type=int, default=4, help="the SFTP connection's pool_size for the sync run")
    args = parser.parse_args()

    # Import once before any timing: blocks import prefect (~1.3 CPU-s), which is not transfer time.
    import blocks.sftp  # noqa: F401
    import tasks.connectors.sftp  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="docroute-sftp-bench-"))
    work.chmod(0o755)
    server = start_sshd(work / "sshd")
    result: dict = {
        "docs": args.docs, "size": args.size, "sshd": "OpenSSH on 127.0.0.1", "cores": os.cpu_count(),
        "pool_size": args.pool_size, "repeat": args.repeat, "load_before": round(os.getloadavg()[0], 2),
    }
    try:
        big_inbox = _big_inbox(work, args.big_docs, args.big_size) if args.big else None
        if big_inbox is not None:  # first, before the Prefect client has grown
            result["memory_connector"] = bench_memory_connector(server, big_inbox, args.big_docs, args.big_size)

        from tasks.sources.seed import write_document

        inbox = work / "inbox"
        now = datetime.now(timezone.utc)
        for i in range(args.docs):
            write_document(inbox, f"B{i:06d}", client="bench", approved_at=now - timedelta(minutes=5),
                           pdf_size=args.size, metadata={"number": f"N{i}", "supplier": "Globex"})
        pdf_dir = work / "pdfs"  # the same PDFs, without the inbox's metadata files
        pdf_dir.mkdir()
        for p in sorted(inbox.glob("*.pdf")):
            shutil.copy2(p, pdf_dir / p.name)
        files = sorted(pdf_dir.glob("*.pdf"))
        result["pdf_bytes"] = files[0].stat().st_size
        result["rclone_version"] = ensure_rclone()

        dest = server.mkdir("connector-serial")
        result["connector_deliver_s"] = round(bench_connector(server, files, dest, batch=False), 3)
        assert _count(dest) == args.docs
        dest = server.mkdir("connector-batch")
        result["connector_deliver_batch_s"] = round(bench_connector(server, files, dest, batch=True), 3)
        assert _count(dest) == args.docs

        raw, rclone, flow = [], [], []
        with FlowBench(server, work, args.pool_size) as flows:
            if big_inbox is not None:
                # The same number of small documents first (twice: the first run also warms up Prefect's
                # client), so the big run's growth can be compared with a run that moves 400x less data.
                small = _big_inbox(work, args.big_docs, args.size, name="small-inbox")
                bench_memory_flow(flows, server, small, args.big_docs, args.size, tag="warmup")
                result["memory_flow_small"] = bench_memory_flow(flows, server, small, args.big_docs, args.size, tag="small")
                result["memory_flow"] = bench_memory_flow(flows, server, big_inbox, args.big_docs, args.big_size)
            for k in range(args.repeat):  # interleaved, so a noisy moment hits all three alike
                dest = server.mkdir(f"raw-{k}")
                raw.append(round(bench_raw(server, files, dest), 3))
                assert _count(dest) == args.docs
                dest = server.mkdir(f"rclone-{k}")
                rclone.append(round(bench_rclone(server, pdf_dir, dest, work), 3))
                assert _count(dest) == args.docs
                dest = server.mkdir(f"docroute-{k}")
                flow.append(flows.run(inbox, dest)["wall_s"])
                delivered = _count(dest)
                assert delivered == args.docs, f"the sync run delivered {delivered} of {args.docs}"
                for folder in (f"raw-{k}", f"rclone-{k}", f"docroute-{k}"):
                    shutil.rmtree(server.data / folder, ignore_errors=True)
        result["docroute_path"] = "sync flow run (flows.sync.sync, one run, ledger, Prefect server)"
        result["runs"] = {"raw_s": raw, "rclone_s": rclone, "docroute_s": flow}
        result["raw_s"], result["rclone_s"], result["docroute_s"] = _median(raw), _median(rclone), _median(flow)
        result["best"] = {"raw_s": min(raw), "rclone_s": min(rclone), "docroute_s": min(flow)}
        result["docroute_vs_rclone"] = round(result["docroute_s"] / result["rclone_s"], 3)
        result["docroute_vs_raw"] = round(result["docroute_s"] / result["raw_s"], 3)
        result["connector_vs_rclone"] = round(result["connector_deliver_s"] / result["rclone_s"], 3)
        result["targets"] = {
            f"docroute/rclone <= {TARGET_VS_RCLONE}": result["docroute_vs_rclone"] <= TARGET_VS_RCLONE,
            f"docroute/raw <= {TARGET_VS_RAW}": result["docroute_vs_raw"] <= TARGET_VS_RAW,
        }
        if big_inbox is not None:
            # "flat": a sync run of big documents peaks no higher than one of small ones, give or take
            # a quarter of one document (allocator noise), and the connector alone far below one document.
            limit = args.big_size / 1e6 / 4
            extra = result["memory_flow"]["peak_rss_growth_mb"] - result["memory_flow_small"]["peak_rss_growth_mb"]
            result["memory_flow_extra_mb"] = round(extra, 1)
            result["targets"][f"memory flat (flow: big - small peak < {limit:.0f} MB)"] = extra < limit
            result["targets"][f"memory flat (connector peak < {limit:.0f} MB)"] = result["memory_connector"]["peak_rss_growth_mb"] < limit
        result["load_after"] = round(os.getloadavg()[0], 2)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sftp.json").write_text(json.dumps(result, indent=2))
    n = args.docs
    many = f" (median of {args.repeat}, best)" if args.repeat > 1 else ""
    print(f"\nSFTP export of {n} files of {result['pdf_bytes']} bytes to OpenSSH on 127.0.0.1 ({os.cpu_count()} cores, "
          f"load {result['load_before']} before, {result['load_after']} after){many}")
    print(f"{'path':48} {'wall s':>8} {'ms/file':>8} {'best s':>8}")
    rows = [
        ("(a) raw paramiko, TCP_NODELAY, posix_rename", result["raw_s"], result["best"]["raw_s"]),
        (f"(b) {result['rclone_version']} copy (defaults)", result["rclone_s"], result["best"]["rclone_s"]),
        (f"(c) docroute sync flow run, pool_size {args.pool_size}", result["docroute_s"], result["best"]["docroute_s"]),
        ("    connector path, serial deliver", result["connector_deliver_s"], None),
        (f"    connector path, deliver_batch (pool {args.pool_size})", result["connector_deliver_batch_s"], None),
    ]
    for name, secs, best in rows:
        print(f"{name[:48]:48} {secs:8.2f} {1000 * secs / n:8.2f} {'' if best is None else f'{best:8.2f}'}")
    ratios = {"rclone": result["docroute_vs_rclone"], "raw": result["docroute_vs_raw"]}
    for name, ok in result["targets"].items():
        if name.startswith("memory (flow") or "flow:" in name:
            value = result["memory_flow_extra_mb"]
        elif name.startswith("memory"):
            value = result["memory_connector"]["peak_rss_growth_mb"]
        else:
            value = ratios["rclone" if "rclone" in name else "raw"]
        print(f"{name:48} {value:8.2f} {'ok' if ok else 'MISSED'}")
    for key in ("memory_connector", "memory_flow_small", "memory_flow"):
        if key in result:
            m = result[key]
            print(
                f"{key.replace('_', ' ')}: {m['docs']} x {m['size_bytes'] / 1e6:.0f} MB in {m['wall_s']} s ({m['mb_per_s']} MB/s), "
                f"tracemalloc peak {m['tracemalloc_peak_mb']} MB, peak RSS {m['peak_rss_mb']} MB "
                f"(growth during the run {m['peak_rss_growth_mb']} MB{'' if m['peak_reset'] else ', peak not resettable'})"
            )


if __name__ == "__main__":
    main()
