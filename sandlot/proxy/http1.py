"""A strict, small HTTP/1.1 head parser and chunked-body reader for the raw relay.

Only the canonical subset of HTTP/1.1 is accepted here: ``CRLF`` line ends, token
header names with no space before the colon, no obs-fold, at most one
``Content-Length`` (plain digits) or exactly ``Transfer-Encoding: chunked`` — never
both. Anything else is *not* an error for the relay: a request it can't parse is handed
to h11 and the ASGI front door, which answer it as they always did (usually 400). So
this parser can only narrow what reaches a sandbox, never widen it.

Header names keep the case the client sent (Go's reverse proxy, in front of E2B's
sandboxes, does not lowercase them; code that reads raw header lines sees the same bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
"""Longer heads go to h11, which refuses them."""

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([1-9][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?")

Headers = list[tuple[bytes, bytes]]


class Unparsable(ValueError):
    """Not the canonical HTTP/1.1 this module reads."""


@dataclass
class Head:
    """A parsed request or response head. ``length`` is the body size, ``-1`` for chunked,
    ``None`` when no framing header was sent."""

    method: str
    """The request's method; a response's HTTP version."""
    target: bytes
    status: int
    headers: Headers
    length: int | None
    size: int
    """Bytes of the head, blank line included."""


def head_end(buffer: bytes | bytearray) -> int:
    """Index just past the head's blank line, ``0`` while incomplete; raises past :data:`MAX_HEAD`."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise Unparsable("head too long")
        if b"\n\n" in buffer or b"\n\r\n" in buffer:
            raise Unparsable("bare LF line ends")   # h11 decides what that means
        return 0
    return end + 4


def _headers(lines: list[bytes]) -> tuple[Headers, int | None]:
    headers: Headers = []
    length: int | None = None
    seen_length = seen_te = False
    for line in lines:
        match = _HEADER.fullmatch(line)
        if match is None:
            raise Unparsable("bad header line")
        name, value = match.group(1), match.group(2)
        lower = name.lower()
        if lower == b"content-length":
            if seen_length or _DIGITS.fullmatch(value) is None:
                raise Unparsable("bad or repeated Content-Length")
            seen_length, length = True, int(value)
        elif lower == b"transfer-encoding":
            if seen_te or value.lower() != b"chunked":
                raise Unparsable("Transfer-Encoding other than a single chunked")
            seen_te = True
        headers.append((name, value))
    if seen_te:
        if seen_length:
            raise Unparsable("both Content-Length and Transfer-Encoding")
        length = -1
    return headers, length


def parse_request(data: bytes) -> Head:
    """``data`` is the whole head (from :func:`head_end`)."""
    lines = data[:-4].split(b"\r\n")
    if b"\n" in data[:-4].replace(b"\r\n", b"") or b"\r" in data[:-4].replace(b"\r\n", b""):
        raise Unparsable("bare CR or LF")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise Unparsable("bad request line")
    headers, length = _headers(lines[1:])
    return Head(match.group(1).decode("ascii"), match.group(2), 0, headers, length, len(data))


def parse_response(data: bytes) -> Head:
    lines = data[:-4].split(b"\r\n")
    if b"\n" in data[:-4].replace(b"\r\n", b"") or b"\r" in data[:-4].replace(b"\r\n", b""):
        raise Unparsable("bare CR or LF")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise Unparsable("bad status line")
    headers, length = _headers(lines[1:])
    return Head(match.group(1).decode("ascii"), b"", int(match.group(2)), headers, length, len(data))


class Chunked:
    """Incremental reader of a chunked body: :meth:`feed` returns the data bytes it can and
    how many input bytes it consumed; :attr:`done` after the last chunk and trailers.
    Chunk extensions and trailers are dropped (as uvicorn and httpx did before)."""

    def __init__(self) -> None:
        self.remaining = 0          # data bytes left in the current chunk
        self.state = "size"         # size | data | data-crlf | trailers
        self.done = False

    def feed(self, buffer: bytes | bytearray) -> tuple[list[tuple[int, int]], int]:
        """``(start, end)`` spans of data in ``buffer`` and the number of bytes consumed."""
        spans: list[tuple[int, int]] = []
        pos = 0
        n = len(buffer)
        while pos < n and not self.done:
            if self.state == "data":
                take = min(self.remaining, n - pos)
                spans.append((pos, pos + take))
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = "data-crlf"
            elif self.state == "data-crlf":
                if n - pos < 2:
                    break
                if buffer[pos:pos + 2] != b"\r\n":
                    raise Unparsable("chunk not followed by CRLF")
                pos += 2
                self.state = "size"
            else:
                end = buffer.find(b"\r\n", pos, pos + 4096)
                if end < 0:
                    if n - pos > 4096:
                        raise Unparsable("chunk line too long")
                    break
                line = bytes(buffer[pos:end])
                pos = end + 2
                if self.state == "trailers":
                    if line == b"":
                        self.done = True
                    elif _HEADER.fullmatch(line) is None:
                        raise Unparsable("bad trailer")
                    continue
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise Unparsable("bad chunk size")
                self.remaining = int(match.group(1), 16)
                self.state = "data" if self.remaining else "trailers"
        return spans, pos


class ChunkedPassthrough(Chunked):
    """A chunked body re-framed chunk for chunk: each chunk keeps its size (so a sandbox's
    1 MiB chunks reach the client as 1 MiB chunks, which its HTTP parser reads fastest) while
    every size line, CRLF and the end are our own canonical bytes; extensions and trailers are
    dropped. A chunk's header goes out as soon as its size line is read, its data as it
    arrives: a body cut short leaves a chunk short, which the caller must turn into a broken
    connection (never a complete-looking response)."""

    def relay(self, buffer: bytes) -> tuple[list[bytes | memoryview], int, int]:
        """Output pieces for ``buffer``, the input bytes consumed and the data bytes among them."""
        out: list[bytes | memoryview] = []
        data = 0
        pos = 0
        n = len(buffer)
        view = memoryview(buffer)
        while pos < n and not self.done:
            if self.state == "data":
                take = min(self.remaining, n - pos)
                out.append(view[pos:pos + take])
                data += take
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = "data-crlf"
            elif self.state == "data-crlf":
                if n - pos < 2:
                    break
                if buffer[pos:pos + 2] != b"\r\n":
                    raise Unparsable("chunk not followed by CRLF")
                pos += 2
                out.append(b"\r\n")
                self.state = "size"
            else:
                end = buffer.find(b"\r\n", pos, pos + 4096)
                if end < 0:
                    if n - pos > 4096:
                        raise Unparsable("chunk line too long")
                    break
                line = buffer[pos:end]
                pos = end + 2
                if self.state == "trailers":
                    if line == b"":
                        self.done = True
                        out.append(b"0\r\n\r\n")
                    elif _HEADER.fullmatch(line) is None:
                        raise Unparsable("bad trailer")
                    continue
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise Unparsable("bad chunk size")
                self.remaining = int(match.group(1), 16)
                if self.remaining:
                    self.state = "data"
                    out.append(b"%x\r\n" % self.remaining)
                else:
                    self.state = "trailers"
        return out, pos, data


def rechunk(buffer: bytes | bytearray, spans: list[tuple[int, int]], out: bytearray) -> None:
    """Append the ``spans`` of ``buffer`` to ``out`` as chunks of our own framing."""
    with memoryview(buffer) as view:
        for start, end in spans:
            if end > start:
                out += b"%x\r\n" % (end - start)
                out += view[start:end]
                out += b"\r\n"
