"""Benchmark: SFTP export to a real local OpenSSH sshd, docroute against a raw paramiko loop and rclone.

    python bench/sftp_bench.py [--docs 1000] [--size 50000] [--big] [--big-docs 20] [--big-size 20000000]

Needs root (it starts sshd with a dedicated test account, see tests/sshd.py). Measured in one run,
against one sshd on 127.0.0.1, the same N PDF files of SIZE bytes:
  (a) raw:      one paramiko connection with TCP_NODELAY, temp name + posix_rename per file;
  (b) rclone:   Debian's rclone `copy`, default settings (4 transfers), key auth, pinned known_hosts;
  (c) docroute: one docroute sync run (flows.sync.sync) from a capture inbox to the sshd, against a
                temporary Prefect server; falls back to the connector path (SftpConnector.deliver)
                when the flow cannot be imported, and says so.
Also reported: the connector path alone, serial `deliver` and `deliver_batch` (pool_size
connections). Connection setup is inside every timing; Prefect server start-up is not.
--big adds a memory mode: 20 documents of 20 MB through SftpConnector.deliver, with the
tracemalloc peak and the growth of the process's peak RSS (must stay far below one file).
Writes bench/results/sftp.json and prints a table.
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


def _count(folder: Path, suffix: str = ".pdf") -> int:
    return sum(1 for p in folder.rglob(f"*{suffix}") if not p.name.startswith("."))


def _block(server: Sshd, folder: Path, **kw):
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
def bench_flow(server: Sshd, inbox: Path, dest: Path, work: Path) -> float:
    """One sync run of the docroute flow, against a temporary Prefect server started here."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from blocks.base import register_block_types
        from blocks.capture_inbox import CaptureInboxFolder
        from tasks.settings import get_settings

        register_block_types()
        (work / "cfg" / "clients").mkdir(parents=True, exist_ok=True)
        os.environ.update(
            DOCROUTE_CONFIG_DIR=str(work / "cfg"),
            DOCROUTE_LEDGER_URL=f"sqlite:///{work}/ledger.db",
            DOCROUTE_HOME=str(work / "home"),
        )
        get_settings.cache_clear()
        CaptureInboxFolder(path=str(inbox), settle_seconds=0).save("bench-sftp-inbox", overwrite=True)
        _block(server, dest).save("bench-sftp", overwrite=True)
        (work / "cfg/clients/bench.yaml").write_text(
            "client: bench\nintegrations:\n  - name: invoices-sftp\n    source: capture-inbox-folder/bench-sftp-inbox\n"
            "    connection: sftp-connection/bench-sftp\n    activated_at: 2026-01-01T00:00:00Z\n"
            '    mapping: {folder: "{doc_type}", filename: "{doc_id}.{ext}"}\n'
        )
        from flows.sync import sync

        t0 = time.perf_counter()
        sync(integration="bench/invoices-sftp")
        return time.perf_counter() - t0


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
def bench_memory(server: Sshd, work: Path, docs: int, size: int) -> dict:
    src = work / "big"
    src.mkdir()
    chunk = os.urandom(1024 * 1024)
    files = []
    for i in range(docs):
        path = src / f"BIG{i:04d}.pdf"
        with path.open("wb") as fh:
            fh.write(b"%PDF-1.7\n")
            for _ in range(size // len(chunk)):
                fh.write(chunk)
            fh.write(os.urandom(size % len(chunk)))
        files.append(path)
    dest = server.mkdir("big")
    packages = _packages(files)
    gc.collect()
    rss_before = _rss_mb()
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
    return {
        "docs": docs,
        "size_bytes": size,
        "wall_s": round(wall, 3),
        "mb_per_s": round(docs * size / wall / 1e6, 1),
        "tracemalloc_peak_mb": round(peak / 1e6, 2),
        "peak_rss_growth_mb": round(_rss_mb() - rss_before, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--big", action="store_true", help="also run the memory mode (large documents)")
    parser.add_argument("--big-docs", type=int, default=20)
    parser.add_argument("--big-size", type=int, default=20_000_000)
    args = parser.parse_args()

    # Import once before any timing: blocks import prefect (~1.3 CPU-s), which is not transfer time.
    import blocks.sftp  # noqa: F401
    import tasks.connectors.sftp  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="docroute-sftp-bench-"))
    work.chmod(0o755)
    server = start_sshd(work / "sshd")
    result: dict = {"docs": args.docs, "size": args.size, "sshd": "OpenSSH on 127.0.0.1", "cores": os.cpu_count()}
    try:
        if args.big:  # first, so the process's peak RSS is not already set by the Prefect server
            result["memory"] = bench_memory(server, work, args.big_docs, args.big_size)

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

        dest = server.mkdir("raw")
        result["raw_s"] = round(bench_raw(server, files, dest), 3)
        assert _count(dest) == args.docs

        result["rclone_version"] = ensure_rclone()
        dest = server.mkdir("rclone")
        result["rclone_s"] = round(bench_rclone(server, pdf_dir, dest, work), 3)
        assert _count(dest) == args.docs

        dest = server.mkdir("connector-serial")
        result["connector_deliver_s"] = round(bench_connector(server, files, dest, batch=False), 3)
        assert _count(dest) == args.docs
        dest = server.mkdir("connector-batch")
        result["connector_deliver_batch_s"] = round(bench_connector(server, files, dest, batch=True), 3)
        assert _count(dest) == args.docs

        dest = server.mkdir("docroute")
        try:
            import flows.sync  # noqa: F401
            import deployments.config  # noqa: F401
        except ImportError as exc:
            print(f"flow not importable ({exc}): measuring the connector path", file=sys.stderr)
            result["docroute_path"] = "connector path (SftpConnector.deliver, no flow)"
            result["docroute_s"] = result["connector_deliver_s"]
        else:
            result["docroute_path"] = "sync flow run (flows.sync.sync, one run, ledger, Prefect server)"
            result["docroute_s"] = round(bench_flow(server, inbox, dest, work), 3)
            delivered = _count(dest)
            assert delivered == args.docs, f"the sync run delivered {delivered} of {args.docs}"
        result["docroute_vs_rclone"] = round(result["docroute_s"] / result["rclone_s"], 3)
        result["docroute_vs_raw"] = round(result["docroute_s"] / result["raw_s"], 3)
        result["connector_vs_rclone"] = round(result["connector_deliver_s"] / result["rclone_s"], 3)
        result["targets"] = {
            f"docroute/rclone <= {TARGET_VS_RCLONE}": result["docroute_vs_rclone"] <= TARGET_VS_RCLONE,
            f"docroute/raw <= {TARGET_VS_RAW}": result["docroute_vs_raw"] <= TARGET_VS_RAW,
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sftp.json").write_text(json.dumps(result, indent=2))
    n = args.docs
    print(f"\nSFTP export of {n} files of {result['pdf_bytes']} bytes to OpenSSH on 127.0.0.1 ({os.cpu_count()} cores)")
    print(f"{'path':44} {'wall s':>8} {'ms/file':>8}")
    rows = [
        ("(a) raw paramiko, TCP_NODELAY, posix_rename", result["raw_s"]),
        (f"(b) {result['rclone_version']} copy (defaults)", result["rclone_s"]),
        (f"(c) docroute: {result['docroute_path'][:30]}", result["docroute_s"]),
        ("    connector path, serial deliver", result["connector_deliver_s"]),
        ("    connector path, deliver_batch (pool 4)", result["connector_deliver_batch_s"]),
    ]
    for name, secs in rows:
        print(f"{name[:44]:44} {secs:8.2f} {1000 * secs / n:8.2f}")
    for name, ok in result["targets"].items():
        ratio = result["docroute_vs_rclone"] if "rclone" in name else result["docroute_vs_raw"]
        print(f"{name:44} {ratio:8.2f} {'ok' if ok else 'MISSED'}")
    if "memory" in result:
        m = result["memory"]
        print(
            f"memory: {m['docs']} x {m['size_bytes'] / 1e6:.0f} MB in {m['wall_s']} s ({m['mb_per_s']} MB/s), "
            f"tracemalloc peak {m['tracemalloc_peak_mb']} MB, peak RSS {m['peak_rss_mb']} MB "
            f"(growth during the transfers {m['peak_rss_growth_mb']} MB)"
        )


if __name__ == "__main__":
    main()
