"""Conformance harness for the OneDrive/SharePoint connector: the local Graph and Entra ID
(tests/fakes/graph_api.py). msal is pointed at the fake by the block's authority_host (msal reads
the fake's OpenID configuration); Graph calls by graph_url; the fake's CA by ca_bundle."""

from __future__ import annotations

import uuid

import pytest

from blocks.onedrive import OneDriveConnection
from tests.connectors.conformance import Harness
from tests.fakes.cloud_common import shared
from tests.fakes.graph_api import GraphAPI


def onedrive_connection(fake: GraphAPI, folder: str, **overrides) -> OneDriveConnection:
    fields = dict(tenant=fake.tenant, client_id=fake.client_id, client_secret=fake.client_secret, authority_host=fake.url,
                  graph_url=f"{fake.url}/v1.0", ca_bundle=fake.ca_bundle, drive_id=fake.drive_id, folder=folder,
                  test_folder=folder + "-test", request_timeout=10)
    fields.update(overrides)
    return OneDriveConnection(**fields)


def graph_fake() -> GraphAPI:
    """The process's fake Graph (started on first use)."""
    return shared("graph", GraphAPI)


class OneDriveHarness(Harness):
    def __init__(self, fake: GraphAPI, folder: str):
        self.fake, self.folder = fake, folder
        self.secrets = (fake.client_secret,)

    def connection(self, **overrides) -> OneDriveConnection:
        return onedrive_connection(self.fake, self.folder, **overrides)

    def bad_credentials(self) -> OneDriveConnection:
        return self.connection(client_secret="wrong-" + self.fake.client_secret)

    def received(self, package, f):
        return self.fake.file(f"{self.folder}/{package.path_of(f)}")

    def copies(self, package) -> int:
        name = f"{self.folder}/{package.path_of(package.main)}".lower()
        return sum(1 for p in self.fake.files_under(self.folder) if p.lower() == name)

    def leftovers(self, package):
        return sorted(s["path"] for s in self.fake.sessions.values() if s["path"].startswith(self.folder.strip("/")))


@pytest.fixture
def onedrive_harness():
    fake = graph_fake()
    fake.clear_faults()
    folder = f"/out-{uuid.uuid4().hex[:8]}"
    fake.mkdir(folder)
    return OneDriveHarness(fake, folder)
