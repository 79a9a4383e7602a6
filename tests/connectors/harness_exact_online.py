"""Conformance harness for the Exact Online connector: the local Exact Online (tests/fakes/exact_upload_api.py).

Every file of a package becomes one DocumentAttachment of the Exact document carrying the package's
idempotency key in its Body; `received` reads them back from the fake by that key."""

from __future__ import annotations

import pytest

from blocks.exact_online_connection import ExactOnlineConnection
from tests.connectors.conformance import Harness
from tests.fakes.cloud_common import shared
from tests.fakes.exact_upload_api import ExactAPI, exact_fields

DIVISION = 123456


def exact_fake() -> ExactAPI:
    """The process's fake Exact Online (started on first use): generous limits, the rate-limit tests start their own."""
    return shared("exact-upload", lambda: ExactAPI(divisions=(DIVISION, 654321), minutely=600, window=60, daily=100_000))


class ExactHarness(Harness):
    def __init__(self, fake: ExactAPI):
        self.fake = fake
        self.fields = exact_fields(fake)
        self.secrets = (self.fields["client_secret"], self.fields["refresh_token"])

    def connection(self, **overrides) -> ExactOnlineConnection:
        return ExactOnlineConnection(**{**self.fields, "division": DIVISION, **overrides})

    def bad_credentials(self) -> ExactOnlineConnection:
        return self.connection(client_secret="wrong-" + self.fields["client_secret"])

    def _docs(self, package):
        return self.fake.documents_with("docroute " + package.idempotency_key)

    def received(self, package, f):
        docs = self._docs(package)
        if not docs:
            return None
        found = self.fake.files_of(docs[-1].ID).get(f.name)
        return found[-1] if found else None

    def copies(self, package) -> int:
        docs = self._docs(package)
        # one Exact document, and each file attached once
        if len(docs) != 1:
            return len(docs)
        files = self.fake.files_of(docs[0].ID)
        return 1 if all(len(v) == 1 for v in files.values()) else 2


@pytest.fixture
def exact_online_harness():
    fake = exact_fake()
    fake.clear_faults()
    return ExactHarness(fake)
