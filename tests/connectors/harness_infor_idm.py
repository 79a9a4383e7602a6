"""Conformance harness for the Infor IDM connector: the local ION API gateway (tests/fakes/infor_gateway.py).

The block points at the gateway through its own settings (the .ionapi file's iu and pu); no mapping
file: every document is an MDS_GenericDocument item carrying its correlation attribute. What the
destination holds is read back from the gateway's items (by correlation id and resource name)."""

from __future__ import annotations

import pytest

from blocks.infor import InforIdmConnection, InforIonApiConnection
from deployments.infor import DEFAULT_IDM
from tests.connectors.conformance import Harness
from tests.fakes.infor_gateway import InforGateway


def gateway_secrets(gateway: InforGateway) -> tuple[str, ...]:
    return (gateway.client_secret, gateway.saak, gateway.saak.split("#", 1)[1], gateway.sask)


class InforIdmHarness(Harness):
    def __init__(self, gateway: InforGateway):
        self.gateway = gateway
        self.secrets = gateway_secrets(gateway)

    def ionapi(self, **changes) -> InforIonApiConnection:
        return InforIonApiConnection.from_ionapi(self.gateway.ionapi(**changes))

    def connection(self, **overrides) -> InforIdmConnection:
        settings = {"ionapi": self.ionapi(), "timeout": 10, "after_timeout_wait": 0.05, **overrides}
        return InforIdmConnection(**settings)

    def bad_credentials(self) -> InforIdmConnection:
        return self.connection(ionapi=self.ionapi(sask="not-the-" + self.gateway.sask))

    def items(self, package):
        return self.gateway.items_with(DEFAULT_IDM.correlation_attribute, package.idempotency_key)

    def received(self, package, f):
        items = self.items(package)
        return items[0].resources.get(f.name) if items else None

    def copies(self, package) -> int:
        return len(self.items(package))


@pytest.fixture
def infor_idm_harness():
    gateway = InforGateway().start()
    yield InforIdmHarness(gateway)
    gateway.stop()
