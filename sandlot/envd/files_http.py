"""Plain-HTTP ``GET/POST /files``: streamed download and upload (multipart or octet-stream)."""

from __future__ import annotations

import asyncio
import errno
import os
import stat as stat_mod
import zlib
from collections.abc import AsyncIterator
from typing import NoReturn
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import auth, users
from .filesystem import make_dirs_owned
from .rpc_common import resolve_path
from .state import EnvdState

CHUNK = 64 * 1024


def json_error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=code)


def _wants_gzip(header: str) -> bool:
    """Compress only on an explicit ``Accept-Encoding: gzip`` (the SDK's ``gzip=True``).

    Generic client defaults like ``gzip, deflate`` get identity: it keeps Content-Length and
    Range-friendly bytes and saves the sandbox's CPU.
    """
    return header.strip().lower() == "gzip"


async def _read_file(path: str, compress: bool) -> AsyncIterator[bytes]:
    comp = zlib.compressobj(6, zlib.DEFLATED, 31) if compress else None
    with open(path, "rb") as f:
        while True:
            chunk = await asyncio.to_thread(f.read, CHUNK)
            if not chunk:
                break
            if comp is not None:
                chunk = comp.compress(chunk)
                if not chunk:
                    continue
            yield chunk
    if comp is not None:
        yield comp.flush()


class FilesHandler:
    def __init__(self, state: EnvdState) -> None:
        self.state = state

    def _authorize(self, request: Request, operation: str) -> tuple[users.User, str] | Response:
        q = request.query_params
        raw_path = q.get("path", "")
        username = q.get("username", "")
        denied = auth.check_files_access(
            token=self.state.access_token,
            header_token=request.headers.get("x-access-token"),
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
        got = self._authorize(request, "read")
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
        compress = _wants_gzip(request.headers.get("accept-encoding", ""))
        headers = {
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(os.path.basename(path))}",
            "Cache-Control": "no-store",
        }
        if compress:
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        else:
            headers["Content-Length"] = str(st.st_size)
        return StreamingResponse(_read_file(path, compress), headers=headers, media_type="application/octet-stream")

    async def upload(self, request: Request) -> Response:
        got = self._authorize(request, "write")
        if isinstance(got, Response):
            return got
        user, raw_path = got
        default_dir = self.state.default_cwd(user)
        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        try:
            if ctype == b"multipart/form-data":
                written = await self._multipart(request, params.get(b"boundary", b""), raw_path, user, default_dir)
            else:
                if not raw_path:
                    return json_error(400, "path query parameter is required")
                dest = resolve_path(raw_path, user, default_dir)
                gz = request.headers.get("content-encoding", "").lower() == "gzip"
                await self._write_stream(dest, user, request.stream(), gz)
                written = [dest]
        except UploadError as e:
            return json_error(e.code, str(e))
        return JSONResponse([{"name": os.path.basename(p), "type": "file", "path": p} for p in written])

    async def _write_stream(self, dest: str, user: users.User, chunks: AsyncIterator[bytes], gz: bool) -> None:
        dec = zlib.decompressobj(31) if gz else None
        f = _open_dest(dest, user)
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
        if not boundary:
            raise UploadError(400, "missing multipart boundary")
        written: list[str] = []
        st: dict = {"headers": {}, "field": b"", "value": b"", "file": None, "error": None}

        def on_part_begin() -> None:
            st["headers"] = {}

        def on_header_field(data: bytes, start: int, end: int) -> None:
            st["field"] += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            st["value"] += data[start:end]

        def on_header_end() -> None:
            st["headers"][st["field"].decode("latin-1").lower()] = st["value"]
            st["field"], st["value"] = b"", b""

        def on_headers_finished() -> None:
            _, disp = parse_options_header(st["headers"].get("content-disposition", b""))
            if disp.get(b"name", b"") != b"file":
                st["file"] = None
                return
            filename = disp.get(b"filename", b"").decode("utf-8", "replace")
            target = raw_path if raw_path else filename
            if not target:
                st["error"] = UploadError(400, "missing file path")
                return
            dest = resolve_path(target, user, default_dir)
            if dest in written:
                st["error"] = UploadError(400, f"cannot upload multiple files to the same path '{dest}'")
                return
            try:
                st["file"] = _open_dest(dest, user)
            except UploadError as e:
                st["error"] = e
                return
            written.append(dest)

        def on_part_data(data: bytes, start: int, end: int) -> None:
            if st["file"] is not None and st["error"] is None:
                try:
                    _write(st["file"], data[start:end])
                except UploadError as e:
                    st["error"] = e

        def on_part_end() -> None:
            if st["file"] is not None:
                st["file"].close()
                st["file"] = None

        parser = MultipartParser(boundary, {
            "on_part_begin": on_part_begin, "on_header_field": on_header_field,
            "on_header_value": on_header_value, "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        })
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if st["error"] is not None:
                    raise st["error"]
            parser.finalize()
        finally:
            if st["file"] is not None:
                st["file"].close()
        if not written:
            raise UploadError(400, "no file part in multipart body")
        return written


class UploadError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _open_dest(dest: str, user: users.User):
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
        _raise_os(e, dest)


def _write(f, data: bytes) -> None:
    try:
        f.write(data)
    except OSError as e:
        _raise_os(e, f.name)


def _raise_os(e: OSError, path: str) -> NoReturn:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise UploadError(507, "not enough disk space available") from e
    raise UploadError(500, f"error writing '{path}': {e.strerror}") from e
