"""Conformance harness for the Dropbox connector: the local Dropbox API v2 (tests/fakes/dropbox_api.py).

The fake serves the api and content hosts and the token endpoint over https (its own CA); the
block is pointed at it by its own settings (api_url, content_url, token_url, ca_bundle), and it
holds the fake's refresh token, as after `docroute connect`."""

from __future__ import annotations

import uuid

import pytest

from blocks.dropbox import DropboxConnection
from tests.connectors.conformance import Harness
from tests.fakes.cloud_common import shared
from tests.fakes.dropbox_api import DropboxAPI


def dropbox_connection(fake: DropboxAPI, folder: str, **overrides) -> DropboxConnection:
    fields = dict(client_id=fake.app_key, client_secret=fake.app_secret, refresh_token=fake.refresh_token,
                  token_url=f"{fake.url}/oauth2/token", api_url=fake.url, content_url=fake.url, ca_bundle=fake.ca_bundle,
                  folder=folder, test_folder=folder + "-test", request_timeout=10)
    fields.update(overrides)
    return DropboxConnection(**fields)


class DropboxHarness(Harness):
    def __init__(self, fake: DropboxAPI, folder: str):
        self.fake = fake
        self.folder = folder
        self.secrets = (fake.app_secret, fake.refresh_token)

    def connection(self, **overrides) -> DropboxConnection:
        return dropbox_connection(self.fake, self.folder, **overrides)

    def bad_credentials(self) -> DropboxConnection:
        return self.connection(client_secret="wrong-" + self.fake.app_secret)

    def received(self, package, f):
        return self.fake.file(f"{self.folder}/{package.path_of(f)}")

    def copies(self, package) -> int:
        name = f"{self.folder}/{package.path_of(package.main)}".lower()
        return sum(1 for p in self.fake.files_under(self.folder) if p.lower() == name)


def dropbox_fake() -> DropboxAPI:
    """The process's fake Dropbox (started on first use)."""
    return shared("dropbox", DropboxAPI)


@pytest.fixture
def dropbox_harness():
    fake = dropbox_fake()
    fake.clear_faults()
    folder = f"/out-{uuid.uuid4().hex[:8]}"
    fake.mkdir(folder)
    return DropboxHarness(fake, folder)
