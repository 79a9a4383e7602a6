"""Files inside JSON answers (tasks/sources/api_files.py): base64 decoded into a spool while the answer
streams, whatever the chunk boundaries, the escapes an encoder writes, or what else the JSON holds;
bad base64 and a cut-off answer are errors, never a wrong file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tracemalloc

import pytest

from tasks.sources.api_files import CorruptContent, blob, read_json_with_files, spool_stream


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 4096, 10**6])
def test_base64_values_decode_across_any_chunk_boundary_with_php_escapes(size):
    pdf, xml = b"%PDF-1.7\n" + os.urandom(3000), b"<Invoice/>" * 40
    doc = {"meta_data": {"documentUid": 7, "note": 'a "fileContent": "not this" \\ note', "tags": ["a/b"]},
           "fileContent": base64.b64encode(pdf).decode(), "attachments": [{"content": base64.b64encode(xml).decode()}, {"content": None}],
           "readableContent": None}
    text = json.dumps(doc).replace("/", "\\/").encode()  # PHP's json_encode escapes every slash
    data, spools = read_json_with_files(chunks(text, size), {"fileContent", "content"})
    main = blob(data["fileContent"], spools)
    assert main.open().read() == pdf and main.size == len(pdf) and main.sha256 == hashlib.sha256(pdf).hexdigest()
    assert main.head == pdf[:8]
    assert blob(data["attachments"][0]["content"], spools).open().read() == xml
    assert data["attachments"][1]["content"] is None and blob(None, spools) is None
    assert data["meta_data"] == {"documentUid": 7, "note": 'a "fileContent": "not this" \\ note', "tags": ["a/b"]}
    with main.open() as a, main.open() as b:  # every open is a fresh stream from the start
        assert a.read(5) == b"%PDF-" and b.read() == pdf


def test_line_breaks_and_unicode_escapes_in_base64_are_undone():
    data = os.urandom(500)
    wrapped = json.dumps({"fileContent": base64.encodebytes(data).decode()}).encode()  # "\n" every 76 characters
    assert blob(*(lambda d, s: (d["fileContent"], s))(*read_json_with_files([wrapped], {"fileContent"}))).open().read() == data
    escaped = json.dumps({"fileContent": "QUJD"}).replace("Q", "\\u0051").encode()
    parsed, spools = read_json_with_files(chunks(escaped, 3), {"fileContent"})
    assert blob(parsed["fileContent"], spools).open().read() == b"ABC"


@pytest.mark.parametrize("bad,why", [
    ("QUJD*QUJD", "not valid base64"),
    ("QUJDQ", "not a multiple of 4"),
    ("QU==QUJD", "not valid base64"),
])
def test_corrupt_base64_is_an_error_naming_where(bad, why):
    for size in (1, 4, 100):
        with pytest.raises(CorruptContent, match=f"document 9: fileContent: .*{why}"):
            read_json_with_files(chunks(json.dumps({"fileContent": bad}).encode(), size), {"fileContent"}, "document 9")


def test_an_answer_cut_off_inside_the_file_is_not_taken_for_a_file():
    text = json.dumps({"fileContent": base64.b64encode(os.urandom(999)).decode()}).encode()
    with pytest.raises(ValueError, match="ends inside a string"):
        read_json_with_files([text[: len(text) // 2]], {"fileContent"})


def test_memory_stays_flat_while_a_big_file_streams():
    """A 6 MB file in 64 KiB chunks: what the decoder holds beyond the spool (on disk above 1 MiB) stays small."""
    data = os.urandom(6 * 1024 * 1024)
    text = json.dumps({"meta_data": {}, "fileContent": base64.b64encode(data).decode()}).encode()
    parts = chunks(text, 65536)
    del data
    tracemalloc.start()
    parsed, spools = read_json_with_files(iter(parts), {"fileContent"})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert blob(parsed["fileContent"], spools).size == 6 * 1024 * 1024
    assert peak < 3 * 1024 * 1024, peak  # never the file (6 MB) nor its base64 (8 MB) whole


def test_a_download_is_spooled_hashed_and_counted():
    data = os.urandom(2 * 1024 * 1024 + 5)
    spool = spool_stream(chunks(data, 100_000))
    assert (spool.size, spool.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert spool.open().read() == data
