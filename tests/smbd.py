"""Start Debian's Samba (smbd) on 127.0.0.1 for tests and benchmarks (needs root).

Everything lives in a temp folder: smb.conf, its own passdb (tdbsam), lock, state, cache and pid
folders, the logs and the shares, so nothing of a system Samba is used or touched. Two shares:
`docs` (signing mandatory, the default for SMB 2/3 here) and `sealed` (`smb encrypt = required`:
SMB 3 encryption or no access). The login is a dedicated local account (`docroute-smb`, no shell)
with a random password in the private passdb. When smbd is missing, Debian's samba is installed
with apt-get, so this works on a fresh machine (as tests/sshd.py does for OpenSSH).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.debian import ensure_packages
from tests.net import free_port

SMBD = "/usr/sbin/smbd"
USER = "docroute-smb"


def ensure_samba() -> None:
    """Install Debian's samba when smbd or smbpasswd is missing."""
    ensure_packages(["samba"], lambda: Path(SMBD).exists() and shutil.which("smbpasswd") is not None)


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
        return pwd.getpwnam(name)


@dataclass
class Smbd:
    port: int
    user: str
    password: str
    workdir: Path
    shares: dict[str, Path]
    proc: subprocess.Popen
    uid: int
    gid: int
    host: str = "127.0.0.1"

    def mkdir(self, share: str, relative: str) -> Path:
        """A folder in a share, owned by the test user."""
        path = self.shares[share] / relative
        path.mkdir(parents=True, exist_ok=True)
        for p in [path, *path.relative_to(self.shares[share]).parents]:
            os.chown(self.shares[share] / p, self.uid, self.gid)
        return path

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("log.*")))

    def stop(self) -> None:
        """Stop smbd and the processes it forked per client (its own process group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass


def start_smbd(workdir: Path | None = None, user: str = USER) -> Smbd:
    if os.geteuid() != 0:
        raise RuntimeError("starting a test smbd needs root (it creates a local account and runs smbd)")
    ensure_samba()
    account = ensure_user(user)
    password = "pw-" + secrets.token_urlsafe(12)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="docroute-smbd-"))
    workdir.chmod(0o755)
    for sub in ("private", "lock", "state", "cache", "run", "ncalrpc"):
        (workdir / sub).mkdir(exist_ok=True)
    (workdir / "private").chmod(0o700)
    shares = {"docs": workdir / "docs", "sealed": workdir / "sealed"}
    for path in shares.values():
        path.mkdir(exist_ok=True)
        os.chown(path, account.pw_uid, account.pw_gid)
    config = workdir / "smb.conf"
    for _ in range(3):  # the free port can be taken between probe and bind
        port = free_port()
        config.write_text("\n".join([
            "[global]",
            "  workgroup = WORKGROUP",
            "  server role = standalone server",
            f"  smb ports = {port}",
            "  interfaces = 127.0.0.1",
            "  bind interfaces only = yes",
            "  disable netbios = yes",
            f"  private dir = {workdir / 'private'}",
            f"  lock directory = {workdir / 'lock'}",
            f"  state directory = {workdir / 'state'}",
            f"  cache directory = {workdir / 'cache'}",
            f"  pid directory = {workdir / 'run'}",
            f"  ncalrpc dir = {workdir / 'ncalrpc'}",
            f"  log file = {workdir / 'log.%m'}",
            "  log level = 1",
            f"  passdb backend = tdbsam:{workdir / 'private' / 'passdb.tdb'}",
            "  map to guest = never",
            "  server min protocol = SMB2_10",
            "  server signing = mandatory",
            "  load printers = no",
            "  printing = bsd",
            "  printcap name = /dev/null",
            "  disable spoolss = yes",
            "  usershare path =",
            "",
            "[docs]",
            f"  path = {shares['docs']}",
            "  read only = no",
            f"  valid users = {user}",
            "  create mask = 0644",
            "  directory mask = 0755",
            "",
            "[sealed]",
            f"  path = {shares['sealed']}",
            "  read only = no",
            f"  valid users = {user}",
            "  smb encrypt = required",
            "",
        ]))
        subprocess.run(["smbpasswd", "-c", str(config), "-a", "-s", user], input=f"{password}\n{password}\n", text=True,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = (workdir / "smbd.out").open("ab")
        # Its own session: on shutdown smbd signals its whole process group, which must not be ours. stdin
        # from /dev/null: a socket on stdin would make smbd serve it (inetd mode).
        proc = subprocess.Popen([SMBD, "--foreground", "--no-process-group", "-s", str(config)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return Smbd(port, user, password, workdir, shares, proc, account.pw_uid, account.pw_gid)
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise RuntimeError(f"smbd did not start: {(workdir / 'smbd.out').read_text(errors='replace')[-2000:]}")
