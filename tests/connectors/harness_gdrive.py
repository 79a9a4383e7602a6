"""Conformance harness for the Google Drive connector: the local Drive v3 and token endpoint
(tests/fakes/drive_api.py). google-api-python-client is pointed at it by `api_endpoint`
(client_options), google-auth by the service account key's token_uri, httplib2 at its CA by ca_bundle."""

from __future__ import annotations

import json
import uuid

import pytest

from blocks.gdrive import GoogleDriveConnection
from tests.connectors.conformance import Harness
from tests.fakes.cloud_common import shared
from tests.fakes.drive_api import DriveAPI


def drive_fake() -> DriveAPI:
    """The process's fake Google Drive (started on first use)."""
    return shared("drive", DriveAPI)


def gdrive_connection(fake: DriveAPI, folder_id: str, **overrides) -> GoogleDriveConnection:
    fields = dict(auth="service_account", service_account_key=json.dumps(fake.service_account_info()),
                  delegated_user="ap@acme.example", api_endpoint=f"{fake.url}/drive/v3/", ca_bundle=fake.ca_bundle,
                  folder_id=folder_id, folder="", test_folder="test", request_timeout=10, retries=3)
    fields.update(overrides)
    return GoogleDriveConnection(**fields)


class GoogleDriveHarness(Harness):
    def __init__(self, fake: DriveAPI, folder_id: str):
        self.fake, self.folder_id = fake, folder_id
        self.secrets = (fake.service_account_info()["private_key"].splitlines()[1],)

    def connection(self, **overrides) -> GoogleDriveConnection:
        return gdrive_connection(self.fake, self.folder_id, **overrides)

    def bad_credentials(self) -> GoogleDriveConnection:
        return self.connection(delegated_user="intruder@elsewhere.example")  # delegation refused for this subject

    def _files(self, package, f):
        parent = self.folder_id
        for part in [p for p in package.folder.split("/") if p]:
            folders = [x for x in self.fake.children(parent, part) if x.mimeType == "application/vnd.google-apps.folder"]
            if not folders:
                return []
            assert len(folders) == 1, f"two folders named {part}"
            parent = folders[0].id
        return self.fake.children(parent, f.name)

    def received(self, package, f):
        files = self._files(package, f)
        assert len(files) <= 1, f"{len(files)} files named {f.name}"
        return self.fake.content(files[0]) if files else None

    def copies(self, package) -> int:
        return len(self._files(package, package.main))


@pytest.fixture
def gdrive_harness():
    fake = drive_fake()
    fake.clear_faults()
    folder_id = fake.folder(fake.root_of("ap@acme.example"), f"out-{uuid.uuid4().hex[:8]}")
    return GoogleDriveHarness(fake, folder_id)
