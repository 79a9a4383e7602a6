"""Templates: placeholders rendered against one document's values, and every value that lands in a
path made safe (no separators, no "..", no control or invisible characters, an optional
allowed-character class, a maximum length in characters and in bytes).

The mapping (tasks/mapping.py), the UBL generator and the Infor connectors render with `Renderer`.
"""

from __future__ import annotations

import re
import string
import unicodedata
from datetime import date, datetime
from typing import Any

from deployments.schema import DATE_PLACEHOLDERS, Sanitize

# C0 and C1 control characters, and lone surrogates (JSON "\udce9" escapes: no file system can store them)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Bytes in one file or folder name: file systems and SFTP servers take 255 (é is 2 bytes, 株 3), and a
# connector uploads under a longer temp name first (".<name>.<8 hex>.partial"), so keep 55 free.
NAME_MAX = 200


def clip_name(text: str, chars: int, nbytes: int = NAME_MAX) -> str:
    """At most `chars` characters and `nbytes` UTF-8 bytes, cut on a character boundary."""
    text = text[:chars]
    data = text.encode("utf-8")
    return text if len(data) <= nbytes else data[:nbytes].decode("utf-8", "ignore")


def byte_length(text: str) -> int:
    return len(text.encode("utf-8"))


class MappingError(Exception):
    """The document cannot be mapped (missing field, unknown lookup key...): permanent for this document."""


# Invisible characters that change how a name reads: bidirectional controls (U+202E makes
# "invoice\u202efdp.exe" display as "invoiceexe.pdf"), zero-width characters (U+200B..U+200D,
# U+2060, U+FEFF), soft hyphens; and line and paragraph separators.
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})


def sanitize_segment(value: str, rules: Sanitize) -> str:
    """Make one value safe as (part of) a single path segment.

    NFKC first, so look-alikes become what they look like (fullwidth U+FF0E U+FF0F are '.' and '/',
    and meet the rules below); then invisible format characters are dropped, then control
    characters, separators, '..', and whatever the allowed-character rule refuses."""
    text = unicodedata.normalize("NFKC", str(value))
    text = "".join(c for c in text if unicodedata.category(c) not in _INVISIBLE)
    if rules.ascii:
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _CONTROL.sub("", text)
    text = text.replace("/", rules.replacement).replace("\\", rules.replacement)
    if rules.allowed is not None:
        text = re.sub(f"[^{rules.allowed}]", rules.replacement, text)
    while ".." in text:
        text = text.replace("..", ".")
    text = text.strip(" .")
    return clip_name(text, rules.max_length).rstrip(" .")


def as_datetime(value: Any) -> datetime | date | None:
    if isinstance(value, (datetime, date)):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


class Renderer:
    """Renders templates against one document's values."""

    def __init__(self, values: dict[str, Any], rules: Sanitize, doc_id: str):
        self.values = values
        self.rules = rules
        self.doc_id = doc_id

    def _value(self, name: str, spec: str, field: str) -> Any:
        if name not in self.values or self.values[name] in (None, ""):
            raise MappingError(f"document {self.doc_id}: {field} uses {{{name}}}, which this document does not have")
        value = self.values[name]
        if spec and "%" in spec:
            when = as_datetime(value)
            if when is None:
                raise MappingError(f"document {self.doc_id}: {{{name}}} = {value!r} is not a date ({field})")
            return when, spec
        if name in DATE_PLACEHOLDERS and not spec:
            when = as_datetime(value)
            return (when, "%Y-%m-%d") if when else value
        try:
            return format(value, spec) if spec else value
        except (ValueError, TypeError) as exc:
            raise MappingError(f"document {self.doc_id}: cannot format {{{name}}} with {spec!r} in {field}: {exc}") from None

    def text(self, template: str, field: str) -> str:
        """Render a non-path template (a field value, a subject): no sanitising."""
        out = []
        for literal, name, spec, _ in string.Formatter().parse(template):
            out.append(literal)
            if name is not None:
                value = self._value(name, spec or "", field)
                out.append(value[0].strftime(value[1]) if isinstance(value, tuple) else str(value))
        return "".join(out)

    def path(self, template: str, field: str, keep_ext: bool = False) -> list[str]:
        """Render a path template into safe segments. '/' only comes from the template or a date format.

        `keep_ext`: segments too long are shortened keeping their extension (file names)."""
        rendered = []
        for literal, name, spec, _ in string.Formatter().parse(template):
            rendered.append(literal)
            if name is None:
                continue
            value = self._value(name, spec or "", field)
            if isinstance(value, tuple):  # date: format each '/'-part separately, keep the slashes
                when, fmt = value
                rendered.append("/".join(sanitize_segment(when.strftime(p), self.rules) for p in fmt.split("/")))
            else:
                rendered.append(sanitize_segment(str(value), self.rules) or self.rules.replacement)
        segments = [s for s in "".join(rendered).split("/") if s]
        for seg in segments:
            if seg in (".", ".."):
                raise MappingError(f"document {self.doc_id}: {field} renders to an unsafe path segment {seg!r}")
        if keep_ext:
            return [fit_name(s, self.rules.max_length) for s in segments]
        return [clip_name(s, self.rules.max_length) for s in segments]


def fit_name(name: str, max_length: int) -> str:
    """Truncate a file name to max_length characters (and NAME_MAX bytes), keeping its extension."""
    if len(name) <= max_length and byte_length(name) <= NAME_MAX:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 10:
        return clip_name(name, max_length)
    return (clip_name(stem, max_length - len(ext) - 1, NAME_MAX - byte_length(ext) - 1).rstrip(" .") or "_") + "." + ext
