"""Start a real OpenSSH sshd on 127.0.0.1 for tests and benchmarks (needs root).

Everything lives in a temp folder: host key, user keys, sshd_config, log. The login is a
dedicated local account (`docroute-test`) with a random password kept per machine; sshd
needs a real account, and a dedicated one keeps root login off. If sshd is missing,
Debian's openssh-server is installed with apt-get, so this works on a fresh machine.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.debian import ensure_packages
from tests.net import free_port

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
USER = "docroute-test"
KEY_PASSPHRASE = "correct horse battery staple"


def ensure_openssh() -> None:
    """Install Debian's openssh-server when sshd or ssh-keygen is missing."""
    ensure_packages(["openssh-server", "openssh-client"], lambda: Path(SSHD).exists() and shutil.which("ssh-keygen") is not None)


def ensure_user(name: str, password: str) -> pwd.struct_passwd:
    """Create the local test account if missing and (re)set its password."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    return pwd.getpwnam(name)


PASSWORD_FILE = Path("/root/.docroute-test-password")


def _account_password() -> str:
    """One random password per machine, kept in a root-only file: test sessions running side by
    side would otherwise reset the shared account's password under each other."""
    if PASSWORD_FILE.exists():
        return PASSWORD_FILE.read_text().strip()
    password = "pw-" + secrets.token_urlsafe(12)
    fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    return password




def _keygen(path: Path, passphrase: str = "", kind: str = "ed25519") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "docroute-test", "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class Sshd:
    """A running sshd and what a client needs to reach it."""

    port: int
    user: str
    password: str
    workdir: Path
    data: Path  # a folder owned by the test user, for exports
    proc: subprocess.Popen
    uid: int
    gid: int
    host: str = "127.0.0.1"
    key_passphrase: str = KEY_PASSPHRASE
    extra: dict = field(default_factory=dict)

    @property
    def host_key_pub(self) -> str:
        """The host's public key, "ssh-ed25519 AAAA... comment"."""
        return (self.workdir / "host_ed25519.pub").read_text().strip()

    @property
    def known_hosts_line(self) -> str:
        keytype, blob = self.host_key_pub.split()[:2]
        return f"[{self.host}]:{self.port} {keytype} {blob}"

    @property
    def user_key_encrypted(self) -> Path:
        """ed25519 private key protected by `key_passphrase` (OpenSSH format)."""
        return self.workdir / "user_ed25519"

    @property
    def user_key_plain(self) -> Path:
        """Unencrypted user key (for rclone and the raw benchmark)."""
        return self.workdir / "user_plain"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def sftp_log(self) -> str:
        """Requests the sftp subsystem logged (only with start_sshd(sftp_log=True))."""
        path = self.workdir / "sftp.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logins(self) -> int:
        """Successful logins so far, from sshd's own log."""
        return self.log_text().count("Accepted ")

    def mkdir(self, relative: str) -> Path:
        """A folder under `data`, owned by the test user."""
        path = self.data / relative
        path.mkdir(parents=True, exist_ok=True)
        for p in [path, *path.relative_to(self.data).parents]:
            os.chown(self.data / p, self.uid, self.gid)
        return path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sshd(workdir: Path | None = None, user: str = USER, sftp_log: bool = False) -> Sshd:
    """Start sshd in the foreground (-D -e) on a free port and wait until it answers with its banner.

    sftp_log: run the sftp subsystem as sftp-server logging every request (open, stat, rename...)
    to `sftp.log` in workdir, so tests can see what the client asked (internal-sftp logs to syslog).
    """
    if os.geteuid() != 0:
        raise RuntimeError("starting a test sshd needs root (it creates a local account and runs sshd)")
    ensure_openssh()
    password = _account_password()
    account = ensure_user(user, password)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="docroute-sshd-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # sshd reads authorized_keys as the user
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
    _keygen(workdir / "host_ed25519")
    _keygen(workdir / "user_ed25519", KEY_PASSPHRASE)
    _keygen(workdir / "user_plain")
    auth = workdir / "authorized_keys"
    auth.write_text((workdir / "user_ed25519.pub").read_text() + (workdir / "user_plain.pub").read_text())
    auth.chmod(0o644)
    subsystem = "internal-sftp"
    if sftp_log:
        sftp_log_path = workdir / "sftp.log"
        sftp_log_path.touch()
        os.chown(sftp_log_path, account.pw_uid, account.pw_gid)
        wrapper = workdir / "sftp-logged"
        wrapper.write_text(f"#!/bin/sh\nexec {SFTP_SERVER} -e -l DEBUG1 2>>{sftp_log_path}\n")
        wrapper.chmod(0o755)
        subsystem = str(wrapper)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    os.chown(data, account.pw_uid, account.pw_gid)
    for _ in range(3):  # the free port can be taken between probe and bind
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {workdir / 'host_ed25519'}",
                    "PidFile none",
                    f"AllowUsers {user}",
                    "PermitRootLogin no",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    f"AuthorizedKeysFile {auth}",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "LogLevel VERBOSE",
                    "MaxStartups 64:30:200",
                    "MaxSessions 64",
                    f"Subsystem sftp {subsystem}",
                    "",
                ]
            )
        )
        log = (workdir / "sshd.log").open("ab")
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return Sshd(port, user, password, workdir, data, proc, account.pw_uid, account.pw_gid)
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise RuntimeError(f"sshd did not start; log: {(workdir / 'sshd.log').read_text(errors='replace')[-2000:]}")
