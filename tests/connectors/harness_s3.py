"""Conformance harness for the S3 connector: real moto S3 servers over HTTP on 127.0.0.1.

moto runs as its own processes (`python -m moto.server`), not in-process (no mock_aws),
so switching on its IAM authentication cannot leak into other tests. Two servers:
- `plain`: authentication off (moto's default: any key is accepted); all behaviour tests.
- `auth`: an IAM user with an s3:* policy and an access key, then authentication on
  (/moto-api/reset-auth 0), so a wrong secret really fails (SignatureDoesNotMatch) and an
  unknown key id too (InvalidAccessKeyId). Only the credential tests use it: moto 5.2.1's
  signature check itself fails for valid requests whose query has a "/" (a list Prefix
  such as "exports/") or whose key has "+" or non-ASCII characters.

Each harness gets its own bucket, with versioning on, so `copies` can count how often
the main object was written (a rewrite is a second version).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from prefect_aws import AwsCredentials

from blocks.s3 import S3Connection, normalise_prefix
from tests.connectors.conformance import Harness
from tests.net import free_port

REGION = "us-east-1"


@dataclass
class MotoS3:
    url: str
    key_id: str
    secret: str

    def client(self, secret: str | None = None):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=secret or self.secret,
            region_name=REGION,
        )




def _start_moto() -> tuple[subprocess.Popen, str]:
    for _ in range(3):  # the free port can be taken between probe and bind: try again
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                requests.get(f"{url}/moto-api/data.json", timeout=1)
                return proc, url
            except requests.RequestException:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError("moto server did not start")


def _enable_auth(url: str) -> tuple[str, str]:
    """Create an IAM user allowed s3:*, switch authentication on; return its key id and secret."""
    iam = boto3.client("iam", endpoint_url=url, aws_access_key_id="setup", aws_secret_access_key="setup",
                       region_name=REGION)
    iam.create_user(UserName="docroute")
    iam.put_user_policy(
        UserName="docroute",
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="docroute")["AccessKey"]
    requests.post(f"{url}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    return key["AccessKeyId"], key["SecretAccessKey"]


@dataclass
class MotoServers:
    plain: MotoS3
    auth: MotoS3


@pytest.fixture(scope="session")
def moto_s3_server():
    started = [_start_moto(), _start_moto()]
    try:
        (_, plain_url), (_, auth_url) = started
        yield MotoServers(
            plain=MotoS3(plain_url, "docroute-test-key", "docroute-test-secret-" + uuid.uuid4().hex),
            auth=MotoS3(auth_url, *_enable_auth(auth_url)),
        )
    finally:
        for proc, _ in started:
            proc.terminate()
            proc.wait(timeout=10)


class S3Harness(Harness):
    def __init__(self, servers: MotoServers, bucket: str):
        self.servers = servers
        self.server = servers.plain
        self.bucket = bucket
        self.client = self.server.client()  # separate from the connector's client
        self.bad_secret = "wrong-" + uuid.uuid4().hex
        self.secrets = (servers.plain.secret, servers.auth.secret, self.bad_secret)
        self.key_prefix = "exports/"

    def credentials(self, secret: str | None = None, server: MotoS3 | None = None) -> AwsCredentials:
        server = server or self.server
        return AwsCredentials(
            aws_access_key_id=server.key_id,
            aws_secret_access_key=secret or server.secret,
            region_name=REGION,
            aws_client_parameters={"endpoint_url": server.url},
        )

    def connection(self, **overrides) -> S3Connection:
        settings = {"credentials": self.credentials(), "bucket_name": self.bucket, "key_prefix": self.key_prefix}
        settings.update(overrides)
        return S3Connection(**settings)

    def auth_connection(self, secret: str | None = None) -> S3Connection:
        """The same bucket on the server that checks signatures."""
        auth = self.servers.auth
        client = auth.client()
        try:
            client.create_bucket(Bucket=self.bucket)
        except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
            pass
        finally:
            client.close()
        return self.connection(credentials=self.credentials(secret, auth))

    def bad_credentials(self) -> S3Connection:
        return self.auth_connection(self.bad_secret)

    def key(self, package, f, prefix: str | None = None) -> str:
        return normalise_prefix(self.key_prefix if prefix is None else prefix) + package.path_of(f)

    def head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
                return None
            raise

    def received(self, package, f, prefix: str | None = None):
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(package, f, prefix))["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchKey":
                return None
            raise

    def versions(self, key: str) -> list[dict]:
        listing = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
        return [v for v in listing.get("Versions", []) if v["Key"] == key]

    def copies(self, package) -> int:
        # Keys are deterministic, so a duplicate shows up as a second version of the main object.
        return len(self.versions(self.key(package, package.main)))

    def leftovers(self, package) -> list[str]:
        listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=normalise_prefix(self.key_prefix))
        return [u["Key"] for u in listing.get("Uploads", [])]


@pytest.fixture
def s3_harness(moto_s3_server):
    harness = S3Harness(moto_s3_server, f"docroute-{uuid.uuid4().hex[:12]}")
    harness.client.create_bucket(Bucket=harness.bucket)
    harness.client.put_bucket_versioning(Bucket=harness.bucket, VersioningConfiguration={"Status": "Enabled"})
    yield harness
    harness.client.close()
