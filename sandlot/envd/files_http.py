"""Plain-HTTP ``GET/POST /files``: streamed download and upload (multipart or octet-stream)."""

from __future__ import annotations

import asyncio
import errno
import os
import stat as stat_mod
import zlib
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header

from sandlot.protocol.auth import ACCESS_TOKEN_HEADER

from . import auth, users, xattrs
from .asgi import JSONResponse, Request, Response, StreamingResponse
from .filesystem import make_dirs_owned
from .rpc_common import resolve_path
from .state import EnvdState

if TYPE_CHECKING:
    from io import BufferedWriter

CHUNK = 256 * 1024
SMALL = 1024 * 1024
"""Regular files up to this size are read whole and sent with their exact Content-Length."""


def json_error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=code)


def accepted_encoding(header: str | None) -> str | None:
    """Pick the response encoding: "gzip", "identity", or None (→ 406).

    gzip only when it is the client's sole listed coding, i.e. the SDK's ``read(gzip=True)``.
    Generic defaults like httpx's ``gzip, deflate`` get identity: it keeps Content-Length and
    Range working and saves the sandbox's CPU, and identity is always acceptable to them.
    """
    if not header or not header.strip():
        return "identity"
    prefs: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        if name.strip():
            prefs[name.strip().lower()] = q
    codings = [c for c, q in prefs.items() if q > 0 and c not in ("identity", "*")]
    gzip_ok = prefs.get("gzip", prefs.get("x-gzip", prefs.get("*", 0.0))) > 0
    identity_ok = prefs.get("identity", prefs.get("*", 1.0)) > 0
    if gzip_ok and (codings in (["gzip"], ["x-gzip"]) or not identity_ok):
        return "gzip"
    return "identity" if identity_ok else None


def _parse_range(header: str, size: int) -> tuple[int, int] | None | Literal[False]:
    """A single ``bytes=`` range → (start, end inclusive); None = ignore; False = unsatisfiable.

    Multi-range requests are answered with the whole file (allowed by RFC 9110).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return False
            return (max(size - n, 0), size - 1) if size else False
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return False
    return start, min(end, size - 1)


async def read_file(path: str, compress: bool, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
    """Stream a file from a worker thread, one bounded chunk at a time, to EOF (``length``:
    at most that much). The size ``stat`` gave is never trusted: ``/proc`` and ``/sys``
    files report 0 and have content, pipes and devices have none, and a file can grow or
    shrink while it is read. So big reads go out chunked, without a Content-Length (small
    ones are read whole first: ``_read_small``)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31) if compress else None
    remaining = length
    # in a thread: opening a FIFO waits for a writer, which must not stall envd's loop
    with await asyncio.to_thread(open, path, "rb", buffering=0) as f:
        if start:
            f.seek(start)
        while remaining is None or remaining > 0:
            want = CHUNK if remaining is None else min(CHUNK, remaining)
            chunk = await asyncio.to_thread(f.read, want)
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            if comp is not None:
                chunk = comp.compress(chunk)
                if not chunk:
                    continue
            yield chunk
    if remaining:
        # a range shrank under us: end the connection without the last chunk, so the client
        # sees a broken transfer, never a complete-looking short one
        raise FileChangedError(f"'{path}' shrank while it was read")
    if comp is not None:
        yield comp.flush()


def _read_small(path: str) -> bytes | None:
    """The whole of a regular file if it ends within ``SMALL`` bytes (None: it is bigger), read
    before answering so the response can say its exact length whatever ``stat`` claimed."""
    data = bytearray()
    with open(path, "rb", buffering=0) as f:
        while len(data) <= SMALL:
            chunk = f.read(SMALL + 1 - len(data))
            if not chunk:
                return bytes(data)
            data += chunk
    return None


class FileChangedError(Exception):
    """A ranged read found the file shorter than the ``Content-Range`` it answered with."""


class FilesHandler:
    def __init__(self, state: EnvdState) -> None:
        self.state = state

    def authorize(self, request: Request, operation: str) -> tuple[users.User, str] | Response:
        q = request.query_params
        raw_path = q.get("path", "")
        username = q.get("username", "")
        denied = auth.check_files_access(
            token=self.state.access_token,
            header_token=request.headers.get(ACCESS_TOKEN_HEADER),
            path=raw_path, operation=operation, username=username,
            signature=q.get("signature"), expiration=q.get("signature_expiration"),
        )
        if denied:
            return json_error(401, denied)
        name = username or self.state.default_user
        try:
            user = users.lookup(name)
        except users.UnknownUser:
            return json_error(401, f"invalid username: '{name}'")
        return user, raw_path

    async def download(self, request: Request) -> Response:
        got = self.authorize(request, "read")
        if isinstance(got, Response):
            return got
        user, raw_path = got
        path = resolve_path(raw_path, user, self.state.default_cwd(user))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return json_error(404, f"path '{path}' does not exist")
        except PermissionError:
            return json_error(403, f"permission denied for '{path}'")
        if stat_mod.S_ISDIR(st.st_mode):
            return json_error(400, f"path '{path}' is a directory")
        headers = download_headers(path, st)
        size = st.st_size
        rng = request.headers.get("range")
        if rng and stat_mod.S_ISREG(st.st_mode) and size \
                and _if_range_ok(request.headers.get("if-range"), headers["Last-Modified"]):
            parsed = _parse_range(rng, size)
            if parsed is False:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            if parsed is not None:
                start, end = parsed
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                return StreamingResponse(read_file(path, False, start, end - start + 1), status_code=206,
                                         headers=headers, media_type="application/octet-stream")
        encoding = accepted_encoding(request.headers.get("accept-encoding"))
        if encoding is None:
            return json_error(406, "unsupported Accept-Encoding; supported: gzip, identity")
        compress = encoding == "gzip"
        headers["Vary"] = "Accept-Encoding"
        if compress:
            headers["Content-Encoding"] = "gzip"
        elif stat_mod.S_ISREG(st.st_mode) and size <= SMALL:
            try:
                body = await asyncio.to_thread(_read_small, path)
            except PermissionError:
                return json_error(403, f"permission denied for '{path}'")
            except OSError as e:
                return json_error(500, f"error reading '{path}': {e.strerror}")
            if body is not None:
                return Response(body, headers=headers, media_type="application/octet-stream")
        # bigger (or a device, a pipe): chunked, the body is what a read to EOF finds
        return StreamingResponse(read_file(path, compress), headers=headers, media_type="application/octet-stream")

    async def upload(self, request: Request) -> Response:
        got = self.authorize(request, "write")
        if isinstance(got, Response):
            return got
        user, raw_path = got
        default_dir = self.state.default_cwd(user)
        metadata = xattrs.from_headers(request.headers.raw)
        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        try:
            if ctype == b"multipart/form-data":
                written = await self._multipart(request, params.get(b"boundary", b""), raw_path, user, default_dir)
            else:
                if not raw_path:
                    return json_error(400, "path query parameter is required")
                dest = resolve_path(raw_path, user, default_dir)
                gz = (request.headers.get("content-encoding") or "").lower() == "gzip"
                await self._write_stream(dest, user, request.stream(), gz)
                written = [dest]
            return JSONResponse([written_entry(p, metadata) for p in written])
        except UploadError as e:
            return json_error(e.code, str(e))

    async def _write_stream(self, dest: str, user: users.User, chunks: AsyncIterator[bytes], gz: bool) -> None:
        dec = zlib.decompressobj(31) if gz else None
        f = open_dest(dest, user)
        try:
            async for chunk in chunks:
                if dec is not None:
                    try:
                        chunk = dec.decompress(chunk)
                    except zlib.error as e:
                        raise UploadError(400, f"invalid gzip body: {e}") from e
                _write(f, chunk)
            if dec is not None:
                _write(f, dec.flush())
        finally:
            f.close()

    async def _multipart(self, request: Request, boundary: bytes, raw_path: str, user: users.User, default_dir: str) -> list[str]:
        """Stream each ``file`` part straight into its destination (never held in memory)."""
        sink = MultipartSink(boundary, raw_path, user, default_dir)
        try:
            async for chunk in request.stream():
                sink.feed(chunk)
            return sink.finish()
        finally:
            sink.close()


class MultipartSink:
    """A ``multipart/form-data`` body fed in pieces: each ``file`` part is written to its
    destination as it arrives. ``feed`` raises the first :class:`UploadError`; the body's
    own path (``files_fast``) and the ASGI one share it."""

    def __init__(self, boundary: bytes, raw_path: str, user: users.User, default_dir: str) -> None:
        if not boundary:
            raise UploadError(400, "missing multipart boundary")
        self.written: list[str] = []
        self.raw_path, self.user, self.default_dir = raw_path, user, default_dir
        self.headers: dict[str, bytes] = {}
        self.field = self.value = b""
        self.file: BufferedWriter | None = None
        self.error: UploadError | None = None
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        })

    def feed(self, chunk: bytes) -> None:
        self.parser.write(chunk)
        if self.error is not None:
            raise self.error

    def finish(self) -> list[str]:
        """End of the body: the paths written (raises if it held no file part)."""
        self.parser.finalize()
        self.close()
        if self.error is not None:
            raise self.error
        if not self.written:
            raise UploadError(400, "no file part in multipart body")
        return self.written

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _part_begin(self) -> None:
        self.headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def _header_end(self) -> None:
        self.headers[self.field.decode("latin-1").lower()] = self.value
        self.field = self.value = b""

    def _headers_finished(self) -> None:
        _, disp = parse_options_header(self.headers.get("content-disposition", b""))
        if disp.get(b"name", b"") != b"file":
            self.file = None
            return
        filename = disp.get(b"filename", b"").decode("utf-8", "replace")
        target = self.raw_path if self.raw_path else filename
        if not target:
            self.error = UploadError(400, "missing file path")
            return
        dest = resolve_path(target, self.user, self.default_dir)
        if dest in self.written:
            self.error = UploadError(400, f"cannot upload multiple files to the same path '{dest}'")
            return
        try:
            self.file = open_dest(dest, self.user)
        except UploadError as e:
            self.error = e
            return
        self.written.append(dest)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.file is not None and self.error is None:
            try:
                _write(self.file, data[start:end])
            except UploadError as e:
                self.error = e

    def _part_end(self) -> None:
        self.close()


def written_entry(path: str, metadata: dict[str, str] | None) -> dict[str, Any]:
    """Upload response item. A write makes the request's ``X-Metadata-*`` headers the file's
    whole ``user.e2b.*`` set, so a write without them clears what an earlier write attached
    (envd: "replacing previous metadata"); the file is truncated in place, so without this
    its xattrs would survive the overwrite."""
    entry: dict[str, Any] = {"name": os.path.basename(path), "type": "file", "path": path}
    try:
        xattrs.replace(path, metadata or {})
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise UploadError(400, f"filesystem of '{path}' does not support metadata (xattrs)") from e
        if e.errno in (errno.ENOSPC, errno.E2BIG, errno.ERANGE):
            raise UploadError(400, f"metadata too large for '{path}'") from e
        raise UploadError(500, f"error setting metadata on '{path}': {e.strerror}") from e
    current = xattrs.read(path)
    if current:
        entry["metadata"] = current
    return entry


def download_headers(path: str, st: os.stat_result) -> dict[str, str]:
    """The headers of every download of ``path`` (before its length, range or encoding)."""
    return {
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(os.path.basename(path))}",
        "Cache-Control": "no-store",
        "Accept-Ranges": "bytes",
        "Last-Modified": formatdate(st.st_mtime, usegmt=True),
    }


def _if_range_ok(if_range: str | None, last_modified: str) -> bool:
    """If-Range with a date must match exactly; ETags are never issued, so they never match."""
    return if_range is None or if_range.strip() == last_modified


class UploadError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def open_dest(dest: str, user: users.User) -> BufferedWriter:
    try:
        make_dirs_owned(os.path.dirname(dest), user)
        if os.path.isdir(dest):
            raise UploadError(400, f"path '{dest}' is a directory")
        f = open(dest, "wb")
        users.chown_to(dest, user)
        return f
    except PermissionError as e:
        raise UploadError(403, f"permission denied for '{dest}'") from e
    except NotADirectoryError as e:
        raise UploadError(400, f"invalid path '{dest}'") from e
    except OSError as e:
        raise_os(e, dest)


def _write(f: BufferedWriter, data: bytes) -> None:
    try:
        f.write(data)
    except OSError as e:
        raise_os(e, f.name)


def raise_os(e: OSError, path: str) -> NoReturn:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise UploadError(507, "not enough disk space available") from e
    raise UploadError(500, f"error writing '{path}': {e.strerror}") from e
