"""Connection block for Amazon S3 and S3-compatible stores (MinIO, Ceph, R2, Wasabi, ...)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field
from prefect_aws.credentials import AwsCredentials

from blocks.base import ConnectionBlock

MiB = 1024 * 1024
ExistingPolicy = Literal["skip_identical", "overwrite", "fail"]
MetadataMode = Literal["headers", "sidecar", "both"]


class S3Connection(ConnectionBlock):
    """Deliver documents as objects in an S3 bucket (or an S3-compatible store).

    Credentials are a prefect-aws `AwsCredentials` block, referenced directly, plus
    `bucket_name`, rather than a nested prefect-aws `S3Bucket` block: `S3Bucket` has its
    own `bucket_folder`, which would be a second key prefix next to `key_prefix` and
    `test_prefix`, and its `credentials` is a MinIO-or-AWS union (one more nesting level
    in the UI). One `AwsCredentials` block can serve many buckets, and a compatible store
    only needs `aws_client_parameters.endpoint_url` on it.

    Example:
        ```python
        from prefect_aws import AwsCredentials
        from blocks.s3 import S3Connection

        creds = AwsCredentials(
            aws_access_key_id="AKIA...",
            aws_secret_access_key="...",
            region_name="eu-west-1",
            # for a compatible store: aws_client_parameters={"endpoint_url": "https://minio.example:9000"},
        )
        S3Connection(
            credentials=creds,
            bucket_name="acme-invoices",
            key_prefix="docroute/",
            test_prefix="docroute-test/",
        ).save("acme-s3")
        ```
    """

    _block_type_name: ClassVar[str] = "S3 Connection"
    _block_type_slug: ClassVar[str] = "s3-connection"
    _logo_url: ClassVar[str] = (
        "https://cdn.sanity.io/images/3ugk85nk/production/d74b16fe84ce626345adf235a47008fea2869a60-225x225.png"
    )
    _description: ClassVar[str] = (
        "An S3 bucket (or S3-compatible store) that receives exported documents: conditional "
        "writes (If-None-Match), so a retry never writes a document twice."
    )

    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        description="prefect-aws AWS Credentials block: keys (or profile / role) and region; set "
        "aws_client_parameters.endpoint_url for an S3-compatible store. Empty = the default AWS credential chain.",
    )
    bucket_name: str = Field(description="Bucket that receives the documents.", min_length=3, max_length=63)
    key_prefix: str = Field(
        default="",
        description="Key prefix every object is written under, e.g. 'docroute/' (a trailing '/' is added).",
    )
    test_prefix: str | None = Field(
        default=None,
        description="Key prefix used instead of key_prefix when an integration runs in test mode.",
    )
    metadata: MetadataMode = Field(
        default="both",
        description="Where the mapped fields go: headers (x-amz-meta-* on every object, no sidecar object), "
        "sidecar (the package's JSON sidecar as its own object), or both. doc-id, version, sha256 and "
        "idempotency-key headers are always written.",
    )
    if_exists: ExistingPolicy = Field(
        default="skip_identical",
        description="When an object already exists under the key: an identical one (same sha256) is always "
        "left alone, so a retry is a no-op. A different one is replaced (skip_identical, overwrite: both "
        "replace only the version they saw, via If-Match) or is an error (fail).",
    )
    multipart_threshold: int = Field(
        default=16 * MiB,
        ge=5 * MiB,
        le=5 * 1024 * MiB,
        description="Files larger than this many bytes are sent as a multipart upload.",
    )
    multipart_chunksize: int = Field(
        default=8 * MiB,
        ge=5 * MiB,
        le=5 * 1024 * MiB,
        description="Part size in bytes of a multipart upload (S3 minimum 5 MiB); one part is held in memory.",
    )
    storage_class: str | None = Field(
        default=None,
        description="Storage class of new objects, e.g. STANDARD_IA or GLACIER_IR; empty = the bucket's default.",
    )

    def label(self, prefix: str | None = None) -> str:
        """"s3://bucket/prefix (endpoint)": never a key or secret."""
        prefix = self.key_prefix if prefix is None else prefix
        return f"s3://{self.bucket_name}/{normalise_prefix(prefix)} ({self.endpoint_label()})"

    def endpoint_label(self) -> str:
        endpoint = self.credentials.aws_client_parameters.endpoint_url
        if endpoint:
            parts = urlsplit(endpoint)
            # Drop any user:password@ and query string someone may have put in the URL.
            return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}".rstrip("/")
        return f"AWS {self.credentials.region_name}" if self.credentials.region_name else "AWS"

    def secret_values(self) -> list[str]:
        """Values that must never appear in an error (used to scrub server messages)."""
        token = self.credentials.aws_session_token  # a plain string in prefect-aws, a secret all the same
        return super().secret_values() + ([token] if token else [])

    def s3_client(self) -> Any:
        """A new S3 client (not prefect-aws's cached one: the connector closes it after its run)."""
        from botocore.config import Config

        creds = self.credentials
        params = creds.aws_client_parameters.get_params_override()
        # Our defaults; a config on the credentials block wins where it sets something.
        config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=120)
        if "config" in params:
            config = config.merge(params.pop("config"))
        if creds.region_name:
            params["region_name"] = creds.region_name
        return creds.get_boto3_session().client("s3", config=config, **params)


def normalise_prefix(prefix: str | None) -> str:
    """'a/b', '/a/b/' -> 'a/b/'; '' -> ''."""
    prefix = (prefix or "").strip().strip("/")
    return f"{prefix}/" if prefix else ""
