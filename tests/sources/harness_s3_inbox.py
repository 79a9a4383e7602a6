"""Source conformance harness for the S3 inbox: the session's real moto S3 server (tests/connectors/harness_s3.py)."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError
from prefect_aws import AwsCredentials

from blocks.s3 import S3Connection
from blocks.s3_inbox import S3Inbox
from tests.connectors.harness_s3 import REGION
from tests.sources.conformance import InboxHarness


class S3InboxHarness(InboxHarness):
    def __init__(self, servers, bucket: str, prefix: str = "outbox/approved/"):
        self.servers = servers
        self.bucket = bucket
        self.prefix = prefix
        self.client = servers.plain.client()
        self.secrets = (servers.plain.secret, servers.auth.secret)

    def _connection(self, server, secret: str | None = None) -> S3Connection:
        creds = AwsCredentials(aws_access_key_id=server.key_id, aws_secret_access_key=secret or server.secret,
                               region_name=REGION, aws_client_parameters={"endpoint_url": server.url})
        return S3Connection(credentials=creds, bucket_name=self.bucket)

    def block(self) -> S3Inbox:
        return S3Inbox(connection=self._connection(self.servers.plain), prefix=self.prefix, settle_seconds=0)

    def broken_block(self) -> S3Inbox:
        """The server that checks signatures, with a wrong secret: the listing is refused."""
        return S3Inbox(connection=self._connection(self.servers.auth, "wrong-" + uuid.uuid4().hex), prefix=self.prefix)

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def remove(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def in_archive(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=f"{self.prefix}archive/{name}")
            return True
        except ClientError:
            return False


@pytest.fixture
def s3_inbox_harness(moto_s3_server):
    harness = S3InboxHarness(moto_s3_server, f"inbox-{uuid.uuid4().hex[:12]}")
    harness.client.create_bucket(Bucket=harness.bucket)
    yield harness
    harness.client.close()
