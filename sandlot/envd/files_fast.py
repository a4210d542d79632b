"""envd's own HTTP/1.1 path for the bulk of ``/files``: uploads and big downloads without h11 or ASGI.

Why (issue 14): through uvicorn's h11 protocol every 256 KiB of a body was parsed into h11
events, copied into h11's buffer and out again, into uvicorn's body buffer and out again
(``bytes(body)``), then written — ≈ 3.5 ms of envd CPU per MiB uploaded, which capped
``files.write`` near 200 MiB/s; downloads went through one worker-thread hop and four ASGI/h11
layers per 256 KiB.

Here uvicorn's :class:`H11Protocol` is subclassed: when the connection is between requests
and the next request is a plain ``GET /files`` or ``POST /files``, this protocol reads the
head itself and, if the request is one of the common shapes below, serves it:

* an upload with a ``Content-Length`` (octet-stream, or ``multipart/form-data`` fed to the
  same :class:`~sandlot.envd.files_http.MultipartSink` as the ASGI route): each received
  buffer goes to ``os.write`` as it is, no copy in between;
* a download of a regular file bigger than ``files_http.SMALL``, identity-encoded, without a
  ``Range``: read to EOF in 1 MiB pieces in a worker thread, sent chunked (a file that grows
  or shrinks while it is read still gives a well-formed response, as on the ASGI route).

Anything else (small files, gzip, ranges, errors found before the body, odd heads,
``Expect``, ``Connection: close``, HTTP/1.0, every other path) goes to h11 with its bytes
untouched, where the ASGI route answers exactly as before, and the connection comes back
here at its next idle ``/files`` request. Authorisation, path resolution, opening (owner,
parent directories) and the answers' JSON are the ASGI route's own functions.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat as stat_mod
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11
from python_multipart.multipart import parse_options_header
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import files_http, xattrs
from .asgi import JSONResponse, Request, Response
from .rpc_common import resolve_path

if TYPE_CHECKING:
    from io import BufferedWriter

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from .files_http import FilesHandler

READ_CHUNK = 1024 * 1024
"""One chunk of a download: big chunks cost the client's HTTP parser least per byte."""
MAX_HEAD = 16 * 1024
"""A ``/files`` head longer than this is h11's to judge (as h11's own limit)."""
HELD_LIMIT = 1024 * 1024
"""Pipelined bytes held while a download is sent before reading pauses."""
_PREFIXES = (b"GET /files", b"POST /files")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_HERE = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"range", b"content-encoding"})
"""Headers whose requests the ASGI route serves (chunked or gzip bodies, 100-continue,
upgrades, ranges)."""


def protocol_for(files: FilesHandler) -> type[H11Protocol]:
    """The class to give uvicorn as ``http=``: h11 plus this path for ``files``."""

    class EnvdProtocol(FilesProtocol):
        handler = files

    return EnvdProtocol


class _Head:
    __slots__ = ("method", "target", "headers")

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.method, self.target, self.headers = method, target, headers

    def get(self, name: bytes) -> bytes | None:
        found = [v for k, v in self.headers if k == name]
        if len(found) > 1:
            raise ValueError(f"repeated {name.decode()}")
        return found[0] if found else None


def parse_head(raw: bytes) -> _Head | None:
    """A request head (ending in CRLF CRLF) in the strict shape served here, else None."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[0] not in (b"GET", b"POST"):
        return None
    path, _, _ = parts[1].partition(b"?")
    if path != b"/files":
        return None
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            return None
        name = name.lower()
        if name in _NOT_HERE:
            return None
        headers.append((name, value.strip(b" \t")))
    return _Head(parts[0], parts[1], headers)


def _request(head: _Head) -> Request:
    """The ASGI route's view of this request (for its authorisation and header helpers)."""
    _, _, query = head.target.partition(b"?")
    scope = {"type": "http", "method": head.method.decode(), "path": "/files",
             "query_string": query, "headers": head.headers}

    async def no_body() -> dict[str, Any]:
        raise RuntimeError("the body is read by files_fast")

    return Request(scope, no_body)


class _Upload:
    """The body of one upload being written as it arrives."""

    def __init__(self, length: int, metadata: dict[str, str] | None, dest: str | None,
                 file: BufferedWriter | None, sink: files_http.MultipartSink | None) -> None:
        self.remaining = length
        self.metadata = metadata
        self.dest, self.file, self.sink = dest, file, sink
        self.error: files_http.UploadError | None = None

    def feed(self, data: bytes | memoryview) -> None:
        if self.error is not None:
            return   # the rest of a failed body is read and dropped: the answer comes after it
        try:
            if self.sink is not None:
                self.sink.feed(bytes(data))
                return
            assert self.file is not None and self.dest is not None
            view = memoryview(data)
            fd = self.file.fileno()
            while view:
                view = view[os.write(fd, view):]
        except files_http.UploadError as e:
            self.fail(e)
        except OSError as e:
            try:
                files_http.raise_os(e, self.dest or "")
            except files_http.UploadError as u:
                self.fail(u)

    def fail(self, error: files_http.UploadError) -> None:
        self.error = error
        self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.sink is not None:
            self.sink.close()

    def answer(self) -> Response:
        try:
            if self.error is not None:
                raise self.error
            if self.sink is not None:
                written = self.sink.finish()
            else:
                self.close()
                written = [self.dest or ""]
            return JSONResponse([files_http.written_entry(p, self.metadata) for p in written])
        except files_http.UploadError as e:
            return files_http.json_error(e.code, str(e))
        finally:
            self.close()


class FilesProtocol(H11Protocol):
    """uvicorn's h11 protocol, with ``/files`` bodies served by :mod:`files_fast` when idle."""

    handler: FilesHandler

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head: bytearray | None = None
        self._upload: _Upload | None = None
        self._sending: asyncio.Task[None] | None = None
        self._held = bytearray()
        self._close_after = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._upload is not None:
            self._feed(data)
        elif self._sending is not None:
            self._held += data
            if len(self._held) > HELD_LIMIT:
                self.flow.pause_reading()
        elif self._head is not None:
            self._head += data
            self._try_head()
        elif data.startswith(_PREFIXES) and self._h11_idle():
            self._unset_keepalive_if_required()
            self._head = bytearray(data)
            self._try_head()
        else:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._upload is not None:
            self._upload.close()   # a body cut short stays as far as it got, as on the ASGI route
            self._upload = None
        if self._sending is not None:
            self._sending.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self._upload is not None or self._sending is not None or self._head is not None:
            self._close_after = True   # after this exchange
            return
        super().shutdown()

    # -- the fast path ---------------------------------------------------------------------

    def _h11_idle(self) -> bool:
        conn = self.conn
        return (conn.our_state is h11.IDLE and conn.their_state is h11.IDLE
                and (self.cycle is None or self.cycle.response_complete) and not conn.trailing_data[0])

    def _try_head(self) -> None:
        assert self._head is not None
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._to_h11(bytes(self._head))
            return
        raw = bytes(self._head[:end + 4])
        rest = bytes(self._head[end + 4:])
        self._head = None
        head = parse_head(raw)
        try:
            started = head is not None and (self._start_upload(head, rest) if head.method == b"POST"
                                            else self._start_download(head, rest))
        except ValueError:   # a repeated or malformed header: h11 judges it
            started = False
        if not started:
            self._to_h11(raw + rest)

    def _to_h11(self, data: bytes) -> None:
        self._head = None
        super().data_received(data)

    def _start_upload(self, head: _Head, rest: bytes) -> bool:
        length = head.get(b"content-length")
        if length is None or not length.isdigit() or b"close" in (head.get(b"connection") or b"").lower():
            return False
        request = _request(head)
        got = self.handler.authorize(request, "write")
        if isinstance(got, Response):
            return False
        user, raw_path = got
        default_dir = self.handler.state.default_cwd(user)
        metadata = xattrs.from_headers(head.headers)
        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        try:
            if ctype == b"multipart/form-data":
                sink = files_http.MultipartSink(params.get(b"boundary", b""), raw_path, user, default_dir)
                upload = _Upload(int(length), metadata, None, None, sink)
            else:
                if not raw_path:
                    return False
                dest = resolve_path(raw_path, user, default_dir)
                upload = _Upload(int(length), metadata, dest, files_http.open_dest(dest, user), None)
        except files_http.UploadError:
            return False   # the ASGI route answers it (its checks and opening are the same)
        self._upload = upload
        self._feed(rest)
        return True

    def _feed(self, data: bytes) -> None:
        upload = self._upload
        assert upload is not None
        if len(data) <= upload.remaining:
            body, rest = data, b""
        else:
            body, rest = data[:upload.remaining], data[upload.remaining:]
        if body:
            upload.feed(body)
            upload.remaining -= len(body)
        if upload.remaining:
            return
        self._upload = None
        self._answer(upload.answer())
        if rest and not self.transport.is_closing():
            self.data_received(rest)

    def _answer(self, response: Response) -> None:
        self.transport.write(self._status_and_headers(response.status_code, response.raw_headers) + response.body)
        self._exchange_done()

    def _status_and_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        out = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode()))
        for name, value in (*self.server_state.default_headers, *headers):
            out += name + b": " + value + b"\r\n"
        return bytes(out + b"\r\n")

    def _exchange_done(self) -> None:
        self.server_state.total_requests += 1
        if self._close_after:
            self.transport.close()
            return
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def _start_download(self, head: _Head, rest: bytes) -> bool:
        length = head.get(b"content-length")
        if length not in (None, b"0") or b"close" in (head.get(b"connection") or b"").lower():
            return False
        request = _request(head)
        got = self.handler.authorize(request, "read")
        if isinstance(got, Response):
            return False
        user, raw_path = got
        if files_http.accepted_encoding(request.headers.get("accept-encoding")) != "identity":
            return False
        path = resolve_path(raw_path, user, self.handler.state.default_cwd(user))
        try:
            st = os.stat(path)
            if not stat_mod.S_ISREG(st.st_mode) or st.st_size <= files_http.SMALL:
                return False   # never opened here: opening a FIFO would wake its writer
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            return False
        headers = {**files_http.download_headers(path, st), "Vary": "Accept-Encoding"}
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw += [(b"content-type", b"application/octet-stream"), (b"transfer-encoding", b"chunked")]
        self._held += rest
        # up to 4 chunks queued: the next read runs while the last ones are still being sent
        self.transport.set_write_buffer_limits(high=4 * READ_CHUNK)
        self.transport.write(self._status_and_headers(200, raw))
        task = self.loop.create_task(self._send(fd))
        self._sending = task
        self.tasks.add(task)
        task.add_done_callback(self._sent)
        return True

    async def _send(self, fd: int) -> None:
        """The file to EOF as 1 MiB chunks (read in a worker thread: a cold page cache must
        not stall envd's loop)."""
        try:
            while True:
                data = await asyncio.to_thread(os.read, fd, READ_CHUNK)
                if self.transport.is_closing():
                    return
                if not data:
                    self.transport.write(b"0\r\n\r\n")
                    return
                self.transport.write(b"%x\r\n" % len(data))
                self.transport.write(data)
                self.transport.write(b"\r\n")
                await self.flow.drain()
        finally:
            os.close(fd)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._sending = None
        if task.cancelled():
            return
        if task.exception() is not None:   # a read error mid-body: the client must see a broken transfer
            self.transport.abort()
            return
        self._exchange_done()
        held, self._held = bytes(self._held), bytearray()
        self.flow.resume_reading()
        if held and not self.transport.is_closing():
            self.data_received(held)
