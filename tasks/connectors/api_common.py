"""What the accounting and e-invoicing connectors (Exact Online, Debitoor, the access point) share.

- `read_package(package, names)`: the bytes of package files, each read whole and checked against the size
  and SHA-256 it was listed with, before anything is sent: a source that broke mid-read or changed since
  it was hashed is a TransientError naming the document, and nothing reaches the destination.
- `not_processed(call)`: repeats a non-idempotent request (a POST that creates something) that the remote
  answered 429, which means it did not process it; any other error is the caller's (a 5xx or a cut
  connection may have created the thing: the connector looks it up before trying again).
- `render(template, values)`: a template of a package's values, absent ones empty (subjects, descriptions).
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from tasks.connectors.base import Package, PackageFile, TransientDeliveryError, VerifyingReader
from tasks.errors import BudgetExhaustedError, TransientError

T = TypeVar("T")


def read_file(package: Package, f: PackageFile) -> bytes:
    try:
        stream = f.open()
        reader = VerifyingReader(stream, f)
        try:
            data = bytearray()
            while chunk := reader.read(1024 * 1024):
                data += chunk
        finally:
            reader.close()
    except OSError as exc:
        raise TransientDeliveryError(f"document {package.doc_id}: cannot read {f.name} from the source: "
                                     f"{exc.strerror or exc}; nothing was sent") from None
    reader.verify(package)
    return bytes(data)


def read_package(package: Package, files: Iterable[PackageFile] | None = None) -> dict[str, bytes]:
    """name -> bytes of `files` (default: every file of the package), all verified before any is used."""
    return {f.name: read_file(package, f) for f in (package.files if files is None else files)}


def not_processed(call: Callable[[], T], attempts: int = 6) -> T:
    """`call()`, repeated while the remote answers 429 (the request was not processed; the HTTP layer's pacer
    waits out its Retry-After or rate-limit reset before the next request goes)."""
    for attempt in range(attempts):
        try:
            return call()
        except TransientError as exc:
            if exc.status != 429 or isinstance(exc, BudgetExhaustedError) or attempt == attempts - 1:
                raise
            if exc.retry_after is None:
                time.sleep(min(0.2 * 2**attempt, 5.0))
    raise AssertionError("unreachable")


def render(template: str, values: Mapping[str, Any]) -> str:
    """`template` with the package's values; a placeholder the document does not have is empty."""
    out = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            value = values.get(name)
            if value is None:
                continue
            try:
                out.append(format(value, spec) if spec else str(value))
            except (TypeError, ValueError):
                out.append(str(value))
    return " ".join("".join(out).split())
