"""Conformance harness for the Debitoor connector: the local Debitoor (tests/fakes/debitoor_api.py).

A Debitoor expense holds one file: the harness's packages are a document's PDF alone (what an
integration exporting to Debitoor maps), and `received` reads back the file of the expense that
carries the package's idempotency key."""

from __future__ import annotations

import pytest

from blocks.debitoor import DebitoorConnection
from tests.connectors.conformance import Harness, make_package
from tests.fakes.cloud_common import shared
from tests.fakes.debitoor_api import DebitoorAPI, debitoor_fields


def debitoor_fake() -> DebitoorAPI:
    """The process's fake Debitoor (started on first use)."""
    return shared("debitoor", DebitoorAPI)


class DebitoorHarness(Harness):
    def __init__(self, fake: DebitoorAPI):
        self.fake = fake
        self.fields = debitoor_fields(fake, default_tax_rate=21)
        self.secrets = (self.fields["client_secret"], self.fields["access_token"])

    def make_package(self, tmp_path, doc_id="INV-1001", **kw):
        return make_package(tmp_path, doc_id, **{**kw, "with_xml": False, "with_sidecar": False})

    def connection(self, **overrides) -> DebitoorConnection:
        return DebitoorConnection(**{**self.fields, **overrides})

    def bad_credentials(self) -> DebitoorConnection:
        return self.connection(access_token="not-a-token")

    def _expenses(self, package):
        return self.fake.with_marker(f"[docroute {package.idempotency_key}]")

    def received(self, package, f):
        found = self._expenses(package)
        if not found or f is not package.main and f.name != package.main.name:
            return None
        file_id = found[-1].get("fileId")
        return self.fake.files[file_id][2] if file_id else None

    def copies(self, package) -> int:
        return len(self._expenses(package))


@pytest.fixture
def debitoor_harness():
    fake = debitoor_fake()
    fake.clear_faults()
    return DebitoorHarness(fake)
