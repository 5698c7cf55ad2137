"""Uploads: the multipart body streamed to disk under a size limit, and the file type told by content.

The server never trusts a client's file name or extension: the file is written to a path the
server chooses, and its type comes from its first bytes (`sniff_kind`):

- ``mp4`` / ``mov``: an ISO base media ``ftyp`` box at offset 4 (brand ``qt  `` = QuickTime);
- ``avi``: ``RIFF....AVI ``;
- ``mkv`` / ``webm``: the EBML magic ``1A 45 DF A3`` (DocType ``webm`` = WebM);
- ``landmarks``: ASCII text whose first lines each hold 136 finite numbers (the published format).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

__all__ = [
    "KIND_SUFFIX",
    "SNIFF_BYTES",
    "VIDEO_KINDS",
    "BadUpload",
    "ReceivedUpload",
    "UploadTooLarge",
    "display_name",
    "receive_upload",
    "sniff_file",
    "sniff_kind",
]

VIDEO_KINDS = ("mp4", "mov", "avi", "mkv", "webm")
KIND_SUFFIX = {"mp4": ".mp4", "mov": ".mov", "avi": ".avi", "mkv": ".mkv", "webm": ".webm", "landmarks": ".txt"}
SNIFF_BYTES = 64 * 1024
LANDMARK_VALUES = 136  # numbers per line of a landmark file
LINES_CHECKED = 3  # a landmark file's first lines that must parse
FIELD_LIMIT = 4096  # bytes of a text form field
FILE_FIELD = "file"


class BadUpload(ValueError):
    """A malformed request body (not multipart, no file part, two files ...)."""


class UploadTooLarge(ValueError):
    """The file part grew past the size limit; nothing of it is kept."""


def _is_landmark_text(head: bytes, whole: bool) -> bool:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return False
    lines = text.splitlines()
    if not whole and lines:
        lines = lines[:-1]  # the last line may be cut by the sniff window
    lines = [line for line in lines if line.strip()][:LINES_CHECKED]
    if not lines:
        return False
    for line in lines:
        tokens = line.split()
        if len(tokens) != LANDMARK_VALUES:
            return False
        try:
            if not all(math.isfinite(float(t)) for t in tokens):
                return False
        except ValueError:
            return False
    return True


def sniff_kind(head: bytes, whole: bool = False) -> Optional[str]:
    """The upload kind from the first bytes of a file (see the module docstring), None if unknown.

    `whole`: `head` is the entire file (its last line is complete).
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "mkv"  # the EBML header's DocType
    if _is_landmark_text(head, whole):
        return "landmarks"
    return None


def sniff_file(path: Path) -> Optional[str]:
    """`sniff_kind` of a file on disk."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES + 1)
    return sniff_kind(head[:SNIFF_BYTES], whole=len(head) <= SNIFF_BYTES)


def display_name(filename: str) -> str:
    """A client's file name reduced to a label: last path component, printable, at most 200 characters.

    Only ever shown, never used to build a path.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:200] or "upload"


@dataclass
class ReceivedUpload:
    """The file part of a multipart body, written to `path`, and the text fields."""

    path: Path
    filename: str = ""
    size: int = 0
    fields: Dict[str, str] = field(default_factory=dict)
    has_file: bool = False


class _PartWriter:
    """python-multipart callbacks: the file part goes to `out`, text fields to memory."""

    def __init__(self, upload: ReceivedUpload, limit: int):
        self.upload, self.limit = upload, limit
        self.pending: List[bytes] = []  # file bytes parsed but not yet written
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.name: Optional[str] = None
        self.is_file = False
        self.data = bytearray()

    def callbacks(self) -> Any:  # python-multipart's MultipartCallbacks
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self.disposition, self.name, self.is_file, self.data = b"", None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise BadUpload("a form part has no name")
        self.name = options[b"name"].decode("utf-8", "replace")
        self.is_file = b"filename" in options
        if self.is_file:
            if self.name != FILE_FIELD or self.upload.has_file:
                raise BadUpload(f"send exactly one file, in the form field {FILE_FIELD!r}")
            self.upload.has_file = True
            self.upload.filename = options[b"filename"].decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            self.upload.size += end - start
            if self.upload.size > self.limit:
                raise UploadTooLarge(f"the file is larger than this server's limit of {self.limit} bytes")
            self.pending.append(data[start:end])
        else:
            self.data += data[start:end]
            if len(self.data) > FIELD_LIMIT:
                raise BadUpload(f"form field {self.name!r} is too long")

    def on_part_end(self) -> None:
        if not self.is_file and self.name is not None:
            self.upload.fields[self.name] = self.data.decode("utf-8", "replace").strip()


async def receive_upload(content_type: str, chunks: AsyncIterator[bytes], target: Path,
                         limit: int) -> ReceivedUpload:
    """Parse a ``multipart/form-data`` body chunk by chunk, writing its file part to `target`.

    Stops at the first byte over `limit` (`UploadTooLarge`); a malformed body raises `BadUpload`.
    On any error `target` is removed; the caller decides what to do with the rest of the body.
    """
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise BadUpload("expected a multipart/form-data body with a 'file' part")
    upload = ReceivedUpload(target)
    writer = _PartWriter(upload, limit)
    parser = MultipartParser(params[b"boundary"], writer.callbacks())
    out = await run_in_threadpool(open, target, "wb")
    try:
        try:
            async for chunk in chunks:
                parser.write(chunk)
                if writer.pending:  # disk writes off the event loop
                    await run_in_threadpool(out.write, b"".join(writer.pending))
                    writer.pending.clear()
            parser.finalize()
        finally:
            await run_in_threadpool(out.close)
    except BaseException as exc:
        _remove(target)
        if isinstance(exc, (BadUpload, UploadTooLarge)):
            raise
        if type(exc).__module__.startswith("python_multipart"):
            raise BadUpload(f"malformed multipart body ({exc})") from None
        raise
    if not upload.has_file:
        _remove(target)
        raise BadUpload(f"no file in the form field {FILE_FIELD!r}")
    return upload


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
