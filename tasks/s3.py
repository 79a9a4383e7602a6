"""S3 errors, for the S3 connector and the S3 inbox: one classification of what a store answered.

Credentials refused (InvalidAccessKeyId, SignatureDoesNotMatch, expired tokens) are the
connection's fault; throttling, 5xx and transport errors are transient (Retry-After kept);
the rest (access denied, no such bucket, a store without conditional writes) is permanent.
"""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
)

from tasks.errors import (
    CredentialsRefusedError,
    PermanentError,
    RemoteError,
    TransientError,
)

TRANSIENT_CODES = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ConditionalRequestConflict",  # two concurrent conditional writes: retry
    "OperationAborted",  # "a conflicting conditional operation is in progress"
    "BadDigest",  # the body was damaged in transit (Content-MD5 did not match): send again
    "IncompleteBody",
    "XAmzContentSHA256Mismatch",
}
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidSecurity"}


def s3_error(exc: Exception, *, bucket: str, key: str | None, action: str, label: str, head: str = "", scrub: Callable[[str], str] = str) -> RemoteError:
    """The error class and message of a failed S3 call: names the object or bucket, the store, never a secret.

    `head` names the document ("document X: "), `scrub` removes the connection's secrets from server messages."""
    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket}"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(err.get("Code", ""))
        status = int(meta.get("HTTPStatusCode") or 0)
        message = scrub(str(err.get("Message", "")))
        if code in ("NoSuchBucket",) or (code == "404" and action == "check"):
            reason = f"bucket {bucket} does not exist"
        elif code in CREDENTIAL_CODES:
            reason = f"credentials rejected ({code}): check the access key and secret of the AWS credentials block"
        elif code in ("AccessDenied", "403", "AllAccessDisabled", "AccountProblem"):
            reason = f"access denied ({code}) to bucket {bucket}: wrong credentials or missing permission"
        elif code == "NotImplemented" or status == 501:
            # Some S3-compatible stores lack conditional writes; retrying will not help.
            return PermanentError(
                f"{head}S3 {action} of {where} on {label} failed: the store does not implement this request "
                f"({message}); it needs conditional writes (If-None-Match / If-Match) and multipart uploads"
            )
        else:
            reason = f"{code or status} {message}".strip()
        text = f"{head}S3 {action} of {where} on {label} failed: {reason}"
        # NoSuchKey on an If-Match replace: deleted since we looked; the retry creates it.
        replaced_gone = action == "replace" and code in ("NoSuchKey", "404")
        if code in TRANSIENT_CODES or status in (408, 429) or status >= 500 or replaced_gone:
            retry_after = meta.get("HTTPHeaders", {}).get("retry-after")
            try:
                seconds = float(retry_after) if retry_after else None
            except ValueError:
                seconds = None
            return TransientError(text, retry_after=seconds)
        if code in CREDENTIAL_CODES:
            return CredentialsRefusedError(text)
        return PermanentError(text)
    text = f"{head}S3 {action} of {where} on {label} failed: {scrub(str(exc))}"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, ParamValidationError, ProfileNotFound)):
        return PermanentError(text)
    return TransientError(text)  # connection refused/reset, timeouts, other transport errors
