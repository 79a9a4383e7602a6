"""Conformance harness for the Infor ION connector: the local ION API gateway (tests/fakes/infor_gateway.py).

No mapping file: each document is a SyncCaptureDocument BOD with its files inside (DocumentPage/EmbeddedData),
the accounting entity from the connection. What the destination holds is read back from the BODs the
gateway published, by message id (the package's idempotency key)."""

from __future__ import annotations

import pytest

from blocks.infor import InforIonApiConnection, InforIonConnection
from tests.connectors.conformance import Harness
from tests.connectors.harness_infor_idm import gateway_secrets
from tests.fakes.infor_gateway import InforGateway


class InforIonHarness(Harness):
    def __init__(self, gateway: InforGateway):
        self.gateway = gateway
        self.secrets = gateway_secrets(gateway)

    def ionapi(self, **changes) -> InforIonApiConnection:
        return InforIonApiConnection.from_ionapi(self.gateway.ionapi(**changes))

    def connection(self, **overrides) -> InforIonConnection:
        settings = {"ionapi": self.ionapi(), "timeout": 10, "accounting_entity": "infor.ln.100",
                    "logical_id": "lid://infor.ims.docroute", **overrides}
        return InforIonConnection(**settings)

    def bad_credentials(self) -> InforIonConnection:
        return self.connection(ionapi=self.ionapi(saak=f"{self.gateway.tenant}#wrong-access-key"))

    def received(self, package, f):
        bod = self.gateway.bods.get(package.idempotency_key)
        return bod.embedded().get(f.name) if bod else None

    def copies(self, package) -> int:
        return 1 if package.idempotency_key in self.gateway.bods else 0


@pytest.fixture
def infor_ion_harness():
    gateway = InforGateway().start()
    yield InforIonHarness(gateway)
    gateway.stop()
