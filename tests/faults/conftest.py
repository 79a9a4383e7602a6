"""Fixtures of the fault suite: the real sshd of the connector tests, fault proxies, an SFTP workspace."""

from __future__ import annotations

import shutil

import pytest

from tests.faults.proxy import FaultProxy


@pytest.fixture
def proxies():
    """proxies(port) -> a FaultProxy in front of 127.0.0.1:port; all stopped after the test."""
    made: list[FaultProxy] = []

    def make(port: int) -> FaultProxy:
        made.append(FaultProxy(port))
        return made[-1]

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def sftp_dest(workspace, sftp_server):  # noqa: F811
    """A folder on the real sshd for this test (read back from its filesystem), removed afterwards."""
    root = sftp_server.mkdir(f"out-{workspace.tag}")
    yield root
    shutil.rmtree(root, ignore_errors=True)
