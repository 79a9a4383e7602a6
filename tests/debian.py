"""Debian packages the tests need (openssh-server, samba, chromium), installed with apt-get when missing.

The suite runs in several processes (pytest-xdist): an install holds a file lock, so two processes
needing samba at once install it once, the second finding it there."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable

LOCK = "/tmp/docroute-tests-apt.lock"


def ensure_packages(packages: list[str], present: Callable[[], bool]) -> None:
    """Install `packages` unless `present()` says they are there (asked again under the lock)."""
    if present():
        return
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if present():
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        wait = ["-o", "DPkg::Lock::Timeout=300"]  # another apt-get on the machine: wait for it, do not fail
        subprocess.run(["apt-get", *wait, "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", *wait, "install", "-y", "--no-install-recommends", *packages], check=True, env=env,
                       stdout=subprocess.DEVNULL)
