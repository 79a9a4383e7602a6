"""XSLT on XML files: lxml (libxslt) for XSLT 1.0, saxonche (SaxonC-HE) for XSLT 2.0 and 3.0.

The engine is chosen by the stylesheet's own version attribute (`<xsl:stylesheet version="2.0">`, or
`xsl:version` on a simplified stylesheet's root). Used by the mapping (an integration's
`mapping.xslt`: any XML file of a package, on any connector) and by the ION connector (a BOD
mapping's `xslt`, on the BOD it built).

    sheet = compile_stylesheet(stylesheet_path(config_dir, "to-erp.xsl"))  # XsltError if it does not compile
    out = sheet.transform(data, {"doc_id": "INV-1"}, what="INV-1.xml")       # bytes, as xsl:output says

Every error is an XsltError whose message names the stylesheet (and the file it failed on), with
the engine's own reason (the xsl:message of a terminating stylesheet, the line of a syntax error).
Input XML is parsed without network access or entity expansion; lxml stylesheets may read files
(xsl:include, document()) but not write files or reach the network.

Compiled stylesheets are cached per process by (path, size, mtime): a run compiles each once, and an
edited stylesheet is compiled again. One lock per stylesheet: calls from several threads take turns.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.connectors.base import PackageFile

XSL_NS = "http://www.w3.org/1999/XSL/Transform"
PREVIEW_CHARS = 20_000  # of a transformed file's content shown by docroute preview


class XsltError(Exception):
    """A stylesheet that cannot be read or compiled, or that failed on a document (names both)."""


def stylesheet_path(config_dir: Path, name: str) -> Path:
    """A stylesheet named in a client file: relative to the config folder's xslt/, or absolute."""
    p = Path(name)
    return p if p.is_absolute() else Path(config_dir) / "xslt" / p


def _parser():
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def parse_xml(data: bytes, what: str = "document"):
    """An lxml tree of `data` (no network, no entity expansion); XsltError naming `what` when not well-formed."""
    from lxml import etree

    try:
        return etree.fromstring(data, _parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        raise XsltError(f"{what} is not well-formed XML: {exc}") from None


def stylesheet_version(path: Path) -> str:
    """The XSLT version a stylesheet declares ("1.0", "2.0", "3.0")."""
    from lxml import etree

    try:
        root = etree.parse(str(path), _parser()).getroot()
    except OSError as exc:
        raise XsltError(f"stylesheet {path} cannot be read: {exc.strerror or exc}") from None
    except etree.XMLSyntaxError as exc:
        raise XsltError(f"stylesheet {path} is not well-formed XML: {exc}") from None
    if etree.QName(root).namespace == XSL_NS and etree.QName(root).localname in ("stylesheet", "transform"):
        version = root.get("version")
    else:  # a simplified stylesheet: a literal result element with xsl:version
        version = root.get(f"{{{XSL_NS}}}version")
    if not version:
        raise XsltError(f"stylesheet {path} is not an XSLT stylesheet (no xsl:stylesheet with a version attribute)")
    return version.strip()


class Stylesheet:
    """One compiled stylesheet; `transform(data, params)` returns the serialised result as bytes."""

    engine = ""

    def __init__(self, path: Path, version: str):
        self.path = path
        self.version = version
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        return f"{self.path} (XSLT {self.version}, {self.engine})"

    def transform(self, data: bytes, params: Mapping[str, str] | None = None, what: str = "document") -> bytes:
        """`data` transformed; XsltError naming the stylesheet and `what` when the input is not XML or the
        stylesheet fails on it (an xsl:message terminate="yes", a dynamic error) or produces nothing."""
        tree = parse_xml(data, what)
        with self._lock:
            out = self._apply(tree, dict(params or {}), what)
        if not out.strip():
            raise XsltError(f"stylesheet {self.describe()} produced no output for {what}")
        return out

    def _apply(self, tree: Any, params: dict[str, str], what: str) -> bytes:
        raise NotImplementedError

    def _failed(self, what: str, reason: str) -> XsltError:
        return XsltError(f"stylesheet {self.describe()} failed on {what}: {reason}")


class LxmlStylesheet(Stylesheet):
    """XSLT 1.0 with lxml (libxslt)."""

    engine = "lxml"

    def __init__(self, path: Path, version: str):
        super().__init__(path, version)
        from lxml import etree

        access = etree.XSLTAccessControl(read_file=True, write_file=False, create_dir=False,
                                         read_network=False, write_network=False)
        try:
            self._xslt = etree.XSLT(etree.parse(str(path), _parser()), access_control=access)
        except etree.XSLTParseError as exc:
            raise XsltError(f"stylesheet {self.describe()} does not compile: {_log(exc.error_log) or exc}") from None

    def _apply(self, tree: Any, params: dict[str, str], what: str) -> bytes:
        from lxml import etree

        try:
            result = self._xslt(tree, **{k: etree.XSLT.strparam(v) for k, v in params.items()})
        except etree.XSLTApplyError as exc:
            raise self._failed(what, _log(self._xslt.error_log) or str(exc)) from None
        return bytes(result)


def _log(error_log: Any) -> str:
    """The messages of an lxml error log, one line."""
    return "; ".join(e.message.strip() for e in error_log if e.message and e.message.strip())


_SAXON: Any = None
_SAXON_LOCK = threading.Lock()


def _saxon() -> Any:
    """The process's one SaxonC processor (made on first use)."""
    global _SAXON
    with _SAXON_LOCK:
        if _SAXON is None:
            from saxonche import PySaxonProcessor

            _SAXON = PySaxonProcessor(license=False)
        return _SAXON


def _saxon_reason(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())


class SaxonStylesheet(Stylesheet):
    """XSLT 2.0 and 3.0 with saxonche (SaxonC-HE)."""

    engine = "Saxon"

    def __init__(self, path: Path, version: str):
        super().__init__(path, version)
        proc = _saxon()
        with _SAXON_LOCK:
            compiler = proc.new_xslt30_processor()
            try:
                self._exe = compiler.compile_stylesheet(stylesheet_file=str(path))
            except Exception as exc:  # noqa: BLE001 - saxonche raises PySaxonApiError
                raise XsltError(f"stylesheet {self.describe()} does not compile: {_saxon_reason(exc)}") from None
            if self._exe is None:
                raise XsltError(f"stylesheet {self.describe()} does not compile")
            self._exe.set_save_xsl_message(True)

    def _apply(self, tree: Any, params: dict[str, str], what: str) -> bytes:
        from lxml import etree

        proc = _saxon()
        text = etree.tostring(tree, encoding="unicode")
        exe = self._exe
        with tempfile.TemporaryDirectory(prefix="docroute-xslt-") as tmp:
            out = os.path.join(tmp, "out")
            try:
                node = proc.parse_xml(xml_text=text)
                exe.clear_parameters()
                exe.clear_xsl_messages()
                for name, value in params.items():
                    exe.set_parameter(name, proc.make_string_value(value))
                exe.transform_to_file(xdm_node=node, output_file=out)
            except Exception as exc:  # noqa: BLE001 - saxonche raises PySaxonApiError
                messages = exe.get_xsl_messages()
                said = f" (xsl:message: {' '.join(str(messages).split())})" if messages is not None and str(messages).strip() else ""
                raise self._failed(what, _saxon_reason(exc) + said) from None
            finally:
                exe.clear_parameters()
            try:
                return Path(out).read_bytes()
            except OSError:
                return b""


_CACHE: dict[tuple[str, int, int], Stylesheet] = {}
_CACHE_LOCK = threading.Lock()


def compile_stylesheet(path: Path) -> Stylesheet:
    """The compiled stylesheet at `path` (cached while the file is unchanged); XsltError naming it."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise XsltError(f"stylesheet {path} cannot be read: {exc.strerror or exc}") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    version = stylesheet_version(path)
    try:
        number = float(version)
    except ValueError:
        raise XsltError(f"stylesheet {path}: version {version!r} is not an XSLT version (1.0, 2.0 or 3.0)") from None
    sheet: Stylesheet = LxmlStylesheet(path, version) if number < 2 else SaxonStylesheet(path, version)
    with _CACHE_LOCK:
        _CACHE[key] = sheet
    return sheet


# -- package files --------------------------------------------------------------------------------------
@dataclass
class TransformedFile(PackageFile):
    """A package file as one or more stylesheets made it (what is delivered); `content` is kept for preview."""

    stylesheets: tuple[str, ...] = ()
    content: bytes = field(default=b"", repr=False)


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether a delivered file name matches one of the glob patterns (case-insensitive)."""
    return any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns)


def read_verified(f: PackageFile, what: str) -> bytes:
    """All of a package file's bytes, checked against the size and SHA-256 it was listed with."""
    try:
        with f.open() as stream:
            data = stream.read()
    except OSError as exc:
        raise XsltError(f"{what}: cannot read {f.name}: {exc.strerror or exc}") from None
    if len(data) != f.size or hashlib.sha256(data).hexdigest() != f.sha256:
        raise XsltError(f"{what}: {f.name} changed while being read (expected {f.size} bytes, read {len(data)})")
    return data


def transform_files(files: list[PackageFile], steps: Sequence[tuple[Sequence[str], Stylesheet]],
                    params_for: Callable[[int], dict[str, str]], what: str) -> list[PackageFile]:
    """`files` with each stylesheet of `steps` (file patterns, stylesheet) applied, in order, to the files
    its patterns match. `params_for(i)` gives step i's parameters; `what` names the document."""
    if not steps:
        return files
    out: list[PackageFile] = []
    for f in files:
        data: bytes | None = None
        used: list[str] = []
        for i, (patterns, sheet) in enumerate(steps):
            if not matches(f.name, patterns):
                continue
            if data is None:
                data = read_verified(f, what)
            data = sheet.transform(data, params_for(i), what=f"{what}, file {f.name}")
            used.append(sheet.name)
        if data is None:
            out.append(f)
            continue
        out.append(TransformedFile(name=f.name, role=f.role, media_type=f.media_type, size=len(data),
                                   sha256=hashlib.sha256(data).hexdigest(), opener=_opener(data),
                                   stylesheets=tuple(used), content=data))
    return out


def _opener(data: bytes) -> Callable[[], io.BytesIO]:
    return lambda: io.BytesIO(data)


def preview_of(f: PackageFile) -> dict[str, Any]:
    """What docroute preview adds for a transformed file: the stylesheets and the output itself."""
    if not isinstance(f, TransformedFile):
        return {}
    text = f.content.decode("utf-8", "replace")
    more = len(text) > PREVIEW_CHARS
    return {"xslt": list(f.stylesheets), "content": text[:PREVIEW_CHARS] + ("..." if more else "")}
