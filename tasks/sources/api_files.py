"""Files that API sources read: downloaded once into a spool while hashed, never held whole.

Two shapes of answer carry a document's files:

- raw bytes (Exact Online's attachment download): `spool_stream(chunks)`;
- base64 inside a JSON answer (GetMyInvoices' `fileContent`, Docbits' file `content`):
  `read_json_with_files(chunks, keys)` parses the JSON as it streams and decodes the string value of
  every key in `keys`, at any depth, straight into a spool: the base64 text is never held, and the
  document never twice (the JSON without those values is parsed at the end; each such value is
  replaced by {"$spool": <index into the spools returned>}, null stays null). Escapes that JSON
  encoders put into base64 (PHP's "\\/", line breaks as "\\n") are undone; anything that is not
  base64 raises CorruptContent naming where it was found.

A `Spool` is an anonymous temporary file (in memory up to 1 MiB, on disk above) with the size, the
SHA-256 and the first bytes of what was written; `document_file()` makes it a DocumentFile whose
every open() is a fresh read-only stream from the start.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
import tempfile
import threading
from collections.abc import Iterable
from typing import Any, BinaryIO

from tasks.documents import DocumentFile

SPOOL_IN_MEMORY = 1024 * 1024
CHUNK = 256 * 1024
_STRING_END = re.compile(rb'["\\]')
_WHITESPACE = b" \t\r\n"


class CorruptContent(ValueError):
    """A file's content in an answer is not what it claims to be (base64 that does not decode)."""


class Spool:
    """One file's bytes, written once while hashed and counted; read back any number of times."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""
        self._lock = threading.Lock()  # views read at their own position, one at a time

    def write(self, data: bytes) -> None:
        if not data:
            return
        if len(self.head) < 8:
            self.head += data[: 8 - len(self.head)]
        self.digest.update(data)
        self.size += len(data)
        self.file.write(data)

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def open(self) -> BinaryIO:
        return _View(self.file, self._lock)  # type: ignore[return-value]

    def document_file(self, name: str, media_type: str) -> DocumentFile:
        return DocumentFile(name=name, media_type=media_type, size=self.size, sha256=self.sha256).with_opener(self.open)

    def close(self) -> None:
        self.file.close()


class _View:
    """A read-only stream of a spool from its start, at its own position (two may be open at once), that
    `with ... as fh` may close without discarding the spool."""

    def __init__(self, fh, lock: threading.Lock) -> None:
        self._fh, self._lock, self._pos = fh, lock, 0

    def read(self, n: int = -1) -> bytes:
        with self._lock:
            self._fh.seek(self._pos)
            data = self._fh.read(n if n is not None and n >= 0 else -1)
        self._pos += len(data)
        return data

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def spool_stream(chunks: Iterable[bytes]) -> Spool:
    """A download's bytes into a spool."""
    spool = Spool()
    for chunk in chunks:
        spool.write(chunk)
    return spool


class _Base64Sink:
    """Decodes base64 text given in pieces into a spool (4 characters at a time, strictly)."""

    def __init__(self, spool: Spool, where: str):
        self.spool, self.where = spool, where
        self.pending = b""
        self.seen = 0  # base64 characters taken so far (for the message)
        self.padded = False

    def feed(self, text: bytes) -> None:
        if not text:
            return
        if self.padded:
            raise CorruptContent(f"{self.where}: not valid base64 (data after the padding, at character {self.seen})")
        data = self.pending + text
        cut = len(data) - len(data) % 4
        self.pending = data[cut:]
        self.seen += len(text)
        if cut:
            self._decode(data[:cut])

    def _decode(self, group: bytes) -> None:
        try:
            self.spool.write(binascii.a2b_base64(group, strict_mode=True))
        except binascii.Error as exc:
            raise CorruptContent(f"{self.where}: not valid base64 ({exc}, within its first {self.seen} characters)") from None
        self.padded = group.endswith(b"=")

    def finish(self) -> None:
        if self.pending:
            raise CorruptContent(f"{self.where}: not valid base64 (its length is not a multiple of 4)")


_NORMAL, _STRING, _AFTER_STRING, _AFTER_KEY, _BLOB = range(5)


def read_json_with_files(chunks: Iterable[bytes], keys: Iterable[str], where: str = "answer") -> tuple[Any, list[Spool]]:
    """(the JSON with each `keys` value replaced by {"$spool": n}, the spools): see the module docstring.

    Raises CorruptContent for base64 that does not decode, ValueError for JSON that does not parse."""
    wanted = {k.encode() for k in keys}
    longest = max((len(k) for k in wanted), default=0)
    out = bytearray()
    spools: list[Spool] = []
    state = _NORMAL
    key = bytearray()  # the string just read (only its first bytes: enough to compare with the keys)
    escape = False  # a backslash at the end of the last chunk
    unicode_escape = b""  # the hex digits of a \\u escape in a blob, while they arrive
    sink: _Base64Sink | None = None
    try:
        for chunk in chunks:
            pos, n = 0, len(chunk)
            while pos < n:
                if state == _NORMAL:
                    i = chunk.find(b'"', pos)
                    if i < 0:
                        out += chunk[pos:]
                        break
                    out += chunk[pos : i + 1]
                    pos, state = i + 1, _STRING
                    key.clear()
                elif state == _STRING:
                    if escape:
                        out.append(chunk[pos])
                        if len(key) <= longest:
                            key += b"\\" + chunk[pos : pos + 1]
                        pos, escape = pos + 1, False
                        continue
                    m = _STRING_END.search(chunk, pos)
                    if m is None:
                        out += chunk[pos:]
                        if len(key) <= longest:
                            key += chunk[pos : pos + longest + 1]
                        break
                    i = m.start()
                    out += chunk[pos:i]
                    if len(key) <= longest:
                        key += chunk[pos : min(i, pos + longest + 1)]
                    if chunk[i] == 0x5C:  # a backslash: the next byte is escaped
                        out.append(0x5C)
                        escape, pos = True, i + 1
                    else:
                        out.append(0x22)
                        pos, state = i + 1, _AFTER_STRING
                elif state == _AFTER_STRING:
                    c = chunk[pos]
                    if c in _WHITESPACE:
                        out.append(c)
                        pos += 1
                    elif c == 0x3A and bytes(key) in wanted:  # "fileContent":
                        out.append(c)
                        pos, state = pos + 1, _AFTER_KEY
                    else:
                        state = _NORMAL
                elif state == _AFTER_KEY:
                    c = chunk[pos]
                    if c in _WHITESPACE:
                        pos += 1
                    elif c == 0x22:
                        spool = Spool()
                        out += b'{"$spool": %d}' % len(spools)
                        spools.append(spool)
                        sink = _Base64Sink(spool, f"{where}: {bytes(key).decode('ascii', 'replace')}")
                        pos, state = pos + 1, _BLOB
                    else:  # null, or not a string: left to the JSON parser
                        state = _NORMAL
                else:  # _BLOB
                    assert sink is not None
                    if escape:
                        if unicode_escape or chunk[pos] == 0x75:  # \uXXXX
                            unicode_escape += chunk[pos : pos + 1]
                            pos += 1
                            if len(unicode_escape) == 5:
                                try:
                                    char = chr(int(unicode_escape[1:], 16))
                                except ValueError:
                                    raise CorruptContent(f"{sink.where}: a bad \\u escape") from None
                                if char not in "\n\r":
                                    sink.feed(char.encode("latin-1", "replace"))
                                escape, unicode_escape = False, b""
                            continue
                        c = chunk[pos]
                        if c not in b"nr":  # line breaks some encoders put into base64
                            sink.feed(chunk[pos : pos + 1])  # \/ and \\ stand for themselves
                        pos, escape = pos + 1, False
                        continue
                    m = _STRING_END.search(chunk, pos)
                    if m is None:
                        sink.feed(chunk[pos:])
                        break
                    i = m.start()
                    sink.feed(chunk[pos:i])
                    if chunk[i] == 0x5C:
                        escape, pos = True, i + 1
                    else:
                        sink.finish()
                        sink, state, pos = None, _NORMAL, i + 1
        if state in (_STRING, _BLOB):
            raise ValueError(f"{where}: the answer ends inside a string (cut short?)")
        return json.loads(bytes(out)), spools
    except BaseException:
        for spool in spools:
            spool.close()
        raise


def blob(value: Any, spools: list[Spool]) -> Spool | None:
    """The spool a {"$spool": n} placeholder stands for (None for a null or missing value)."""
    if isinstance(value, dict) and set(value) == {"$spool"}:
        return spools[value["$spool"]]
    return None
