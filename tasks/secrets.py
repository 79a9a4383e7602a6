"""Secrets out of every message: the values a block holds, in the forms they travel in.

Blocks keep secrets as SecretStr (Prefect stores them encrypted and the UI masks them). A remote's
answer, a URL or a library's exception text may still echo one; every error a connector, a source
or the HTTP and OAuth2 layers raise goes through `scrub` first.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, SecretBytes, SecretStr

MASK = "***"
_MIN = 4  # shorter values would mask ordinary words


def secret_values(model: Any) -> list[str]:
    """Every SecretStr/SecretBytes value in a pydantic model (a block), nested models, lists and dicts."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, SecretBytes):
            found.append(value.get_secret_value().decode("utf-8", "replace"))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name, None))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple, set)):
            for v in value:
                walk(v)

    walk(model)
    return [v for v in dict.fromkeys(found) if v]


def forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as sent: raw, URL-quoted (a query string, a form body) and base64 (basic auth
    headers, encoded payloads); longest first, so a longer form is masked before a part of it."""
    out: set[str] = set()
    for s in secrets:
        if not s or len(s) < _MIN:
            continue
        out.update({s, quote(s, safe=""), quote_plus(s), base64.b64encode(s.encode()).decode().rstrip("=")})
    return sorted(out, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of every secret replaced by ***."""
    for form in forms(secrets):
        text = text.replace(form, MASK)
    return text
