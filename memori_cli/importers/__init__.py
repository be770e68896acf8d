"""Transcript import: detect the format, stream records, validate, redact, store in batches.

Formats: ``native`` (memori's JSONL; a line may also hold a whole ``{"messages": [...]}``
conversation), ``messages`` (one ``{"messages": [...]}`` conversation per line), ``chatgpt``
(``conversations.json`` or the export zip), ``claude`` (Claude.ai ``conversations.json``) and
``sharegpt``. JSONL files, JSON arrays and zip archives are all read incrementally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import queue
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import ImportFormatError
from ..store import NewMessage, Store
from ..store.messages import add_messages
from .formats import CONVERTERS, FORMATS, RecordError, sniff
from .normalize import Defaults, Occurrences, normalize
from .reader import Item, iter_json_array, iter_jsonl, limit_reason

__all__ = [
    "FORMATS",
    "MAX_UNZIPPED_MB",
    "Defaults",
    "ImportReport",
    "ProgressCallback",
    "import_file",
    "partial_report",
]

BATCH_SIZE = 5000
# Rejections kept in the report; the total is always counted.
MAX_REPORTED_REJECTIONS = 1000
ProgressCallback = Callable[[int, int], None]


@dataclasses.dataclass
class ImportReport:
    """What an import did. ``rejected`` lists ``{"line", "error"}`` for each bad record."""

    path: str
    format: str
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rejected_total: int = 0
    sessions: int = 0

    def reject(self, line: int, error: str) -> None:
        """Record a rejected line or record."""
        self.rejected_total += 1
        if len(self.rejected) < MAX_REPORTED_REJECTIONS:
            self.rejected.append({"line": line, "error": error})

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return dataclasses.asdict(self)


def partial_report(exc: BaseException) -> ImportReport | None:
    """What an import that raised ``exc`` had done when it stopped, or None.

    :func:`import_file` attaches its report (as ``exc.import_report``) to an error raised
    once storing began, such as an :class:`~memori_cli.errors.ImportFormatError` from a zip
    member that breaks part-way or a :class:`~memori_cli.errors.StoreError` from a refused
    write: ``imported`` and ``duplicates`` count what was stored (or found stored) before the
    failure, and those messages stay stored. Importing the same file again skips them.
    """
    report = getattr(exc, "import_report", None)
    return report if isinstance(report, ImportReport) else None


MAX_UNZIPPED_MB = 2048
MAX_MEMBER_MB = MAX_UNZIPPED_MB // 2  # one member may use half the total cap
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


class _CappedStream(io.RawIOBase):
    """A zip member read through a byte budget, every failure a clean ImportFormatError.

    A member's declared size can lie, so the bytes actually inflated are counted: a zip bomb
    stops at the cap instead of filling memory. A bad CRC, broken deflate data or a truncated
    archive surface as ``file.zip:member: reason`` rather than a traceback.
    """

    def __init__(self, inner: IO[bytes], where: str, cap: int):
        self._inner = inner
        self._where = where
        self._cap = cap
        self._read = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._read

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        try:
            data = self._inner.read(len(view))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise ImportFormatError(f"{self._where}: {_zip_reason(exc)}") from None
        self._read += len(data)
        if self._read > self._cap:
            raise ImportFormatError(
                f"{self._where}: more than {_mb(self._cap)} uncompressed "
                "(raise --max-unzipped-mb to import it)"
            )
        view[: len(data)] = data
        return len(data)


def _zip_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "CRC" in text:
        return "corrupt member (bad CRC-32)"
    if isinstance(exc, zlib.error):
        return f"corrupt compressed data ({text})"
    return text


class _Source:
    """A file or the transcript inside a zip archive, re-openable from the start.

    ``max_unzipped`` caps the uncompressed bytes read from an archive (declared sizes of its
    transcript members together, and bytes actually inflated); ``max_member`` caps one member.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_unzipped: int = MAX_UNZIPPED_MB << 20,
        max_member: int = MAX_MEMBER_MB << 20,
    ):
        self.path = path
        self.member: str | None = None
        self._cap = min(max_unzipped, max_member)
        if zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as archive:
                    infos = [
                        i for i in archive.infolist() if i.filename.endswith((".json", ".jsonl"))
                    ]
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise ImportFormatError(f"{path}: not a readable zip archive ({exc})") from None
            preferred = [i for i in infos if Path(i.filename).name == "conversations.json"]
            if not (preferred or infos):
                raise ImportFormatError(f"{path}: the zip archive holds no .json or .jsonl file")
            info = (preferred or infos)[0]
            self.member = info.filename
            where = f"{path}:{info.filename}"
            if info.flag_bits & 0x1:
                raise ImportFormatError(f"{where}: encrypted members are not supported")
            if info.compress_type not in _ZIP_METHODS:
                raise ImportFormatError(
                    f"{where}: unsupported compression method {info.compress_type} "
                    "(re-zip it with deflate)"
                )
            if info.file_size > max_member:
                raise ImportFormatError(
                    f"{where}: {info.file_size:,} bytes uncompressed; at most "
                    f"{_mb(max_member)} per member (raise --max-unzipped-mb to import it)"
                )
            if sum(i.file_size for i in infos) > max_unzipped:
                raise ImportFormatError(
                    f"{path}: its transcripts are more than {_mb(max_unzipped)} uncompressed "
                    "(raise --max-unzipped-mb to import them)"
                )

    @contextlib.contextmanager
    def open(self) -> Iterator[tuple[IO[bytes], int]]:
        if self.member is None:
            with open(self.path, "rb") as stream:
                yield stream, self.path.stat().st_size
        else:
            where = f"{self.path}:{self.member}"
            with contextlib.ExitStack() as stack:
                try:
                    archive = stack.enter_context(zipfile.ZipFile(self.path))
                    inner = stack.enter_context(archive.open(self.member))
                except (
                    zipfile.BadZipFile,
                    zlib.error,
                    OSError,
                    NotImplementedError,
                    RuntimeError,
                ) as exc:
                    raise ImportFormatError(f"{where}: {_zip_reason(exc)}") from None
                capped = io.BufferedReader(_CappedStream(inner, where, self._cap))
                yield capped, archive.getinfo(self.member).file_size  # type: ignore[misc]

    def container(self) -> str:
        """``array`` for a JSON document (array or single object), else ``jsonl``."""
        with self.open() as (stream, _):
            head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
            if head.startswith(b"["):
                return "array"
            if not head.startswith(b"{"):
                return "jsonl"
        # '{' opens a JSONL file unless its first line is not a whole JSON value. A line the
        # parser refused for its depth or a long integer is whole: still JSONL.
        with self.open() as (stream, _):
            first = next(iter_jsonl(stream), None)
        return "jsonl" if first is None or first.error is None or first.limit else "array"

    def items(self, container: str, stream: IO[bytes]) -> Iterator[Item]:
        return iter_jsonl(stream) if container == "jsonl" else iter_json_array(stream)


class _Writer:
    """Stores batches on a second thread, so parsing and SQLite's work overlap.

    SQLite releases the GIL while it works, so on two cores an import runs at the speed of the
    slower of the two halves instead of their sum. At most two batches wait in the queue.
    """

    def __init__(self, store: Store, report: ImportReport):
        self._store = store
        self._report = report
        self.sessions: set[tuple[str, str]] = set()
        self._queue: queue.Queue[list[NewMessage] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="memori-import", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (batch := self._queue.get()) is not None:
                if self._error is None:
                    try:
                        result = self._store.retry_lost(lambda: add_messages(self._store, batch))
                    except BaseException as exc:  # handed to the importing thread
                        self._error = exc
                        continue
                    self._report.imported += result.inserted
                    self._report.duplicates += result.duplicates
                    self.sessions.update(result.sessions)
        finally:
            self._store.close_thread()

    def put(self, batch: list[NewMessage]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def detect_format(path: str | Path, *, max_unzipped_mb: int = MAX_UNZIPPED_MB) -> str:
    """The format of the transcript file at ``path``; raises ImportFormatError if unknown."""
    source = _Source(Path(path), **_caps(max_unzipped_mb))
    return _detect(source, source.container())


def _caps(max_unzipped_mb: int) -> dict[str, int]:
    if max_unzipped_mb <= 0:
        raise ImportFormatError("max_unzipped_mb must be a positive number of megabytes")
    total = max_unzipped_mb << 20
    return {"max_unzipped": total, "max_member": total // 2}


def _mb(size: int) -> str:
    return f"{size / (1 << 20):,.4g} MB"


def _detect(source: _Source, container: str) -> str:
    with source.open() as (stream, _):
        for n, item in enumerate(source.items(container, stream)):
            if item.error is None:
                found = sniff(item.value)
                if found:
                    return found
                keys = sorted(item.value)[:8] if isinstance(item.value, dict) else []
                raise ImportFormatError(
                    f"{source.path}: line {item.line}: unrecognised record"
                    + (f" with keys {', '.join(keys)}" if keys else "")
                    + f"; use --format with one of {', '.join(FORMATS)}"
                )
            if n >= 100:
                break
    raise ImportFormatError(f"{source.path}: no readable record found to detect the format from")


def import_file(
    store: Store,
    path: str | Path,
    *,
    defaults: Defaults | None = None,
    format: str | None = None,
    progress: ProgressCallback | None = None,
    batch_size: int = BATCH_SIZE,
    max_unzipped_mb: int = MAX_UNZIPPED_MB,
) -> ImportReport:
    """Import the transcript at ``path`` into ``store``.

    Bad records are reported in the returned :class:`ImportReport` and every valid one is
    stored; importing the same file again adds nothing. ``progress(done, total)`` is called
    with bytes read as the import advances. From a zip archive at most ``max_unzipped_mb``
    megabytes are inflated in all, and at most half of that from one member;
    a member past the caps, encrypted, corrupt or compressed with an unsupported method raises
    ImportFormatError naming ``file.zip:member`` (records stored before it stay stored).

    An error raised once storing began (a broken member, a refused write) carries the report
    of what was stored before it: :func:`partial_report` returns it.
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    if format is not None and format not in CONVERTERS:
        raise ImportFormatError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    source = _Source(path, **_caps(max_unzipped_mb))
    container = source.container()
    fmt = format or _detect(source, container)
    convert = CONVERTERS[fmt]
    defaults = defaults or Defaults(entity="default", session=f"import:{path.name}")
    report = ImportReport(path=str(path), format=fmt)
    writer = _Writer(store, report)
    try:
        _store_records(source, container, convert, defaults, report, writer, progress, batch_size)
    except BaseException as exc:
        report.sessions = len(writer.sessions)
        exc.import_report = report  # type: ignore[attr-defined]  # read by partial_report
        raise
    report.sessions = len(writer.sessions)
    return report


def _store_records(
    source: _Source,
    container: str,
    convert: Callable[[Any], list[dict[str, Any]]],
    defaults: Defaults,
    report: ImportReport,
    writer: _Writer,
    progress: ProgressCallback | None,
    batch_size: int,
) -> None:
    """Read, convert and normalise every record, handing batches to ``writer``; returns once
    every batch is stored (or raises the first error, reading or storing)."""
    batch: list[NewMessage] = []
    occurrences = Occurrences()
    try:
        with source.open() as (stream, total):
            for item in source.items(container, stream):
                if item.error is not None:
                    report.reject(item.line, item.error)
                    continue
                try:
                    raws = convert(item.value)
                except RecordError as exc:
                    report.reject(item.line, str(exc))
                    continue
                except RecursionError as exc:  # parsed just under the limit, too deep to walk
                    report.reject(item.line, limit_reason(exc) or str(exc))
                    continue
                for raw in raws:
                    where = f"{raw['where']}: " if raw.get("where") else ""
                    if "error" in raw:
                        report.reject(item.line, where + raw["error"])
                        continue
                    try:
                        message = normalize(raw, defaults)
                    except RecordError as exc:
                        report.reject(item.line, where + str(exc))
                        continue
                    if message is None:
                        report.skipped += 1
                        continue
                    occurrences.stamp(message)
                    batch.append(message)
                if len(batch) >= batch_size:
                    writer.put(batch)
                    batch = []
                    if progress is not None:
                        progress(stream.tell(), total)
            writer.put(batch)
    finally:
        writer.close()  # waits for every queued batch to be stored
    if progress is not None:
        progress(total, total)
