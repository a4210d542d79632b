"""COPY sources: content-addressed archives uploaded by the SDK through expiring URLs.

The SDK PUTs the tar(.gz) of a COPY step's files *without* the API key, so the
upload URL carries its own HMAC token (team, template, hash, expiry). Archives
are stored per team under ``<templates>/files/<team>/<filesHash>.tar``.

``filesHash`` is not a digest of the archive (``files_hash.py``), so an upload cannot be
checked when it arrives: a build checks the exact bytes it extracts (``snapshot``) and
keys the COPY layer by their sha256, so one team's upload never reaches another's build.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import tarfile
import time
from collections.abc import AsyncIterable
from pathlib import Path

from sandlot import tenant_fs

TOKEN_TTL_S = 3600
DEFAULT_MAX_BYTES = 1 << 30


class UploadError(Exception):
    pass


class UploadTooLarge(UploadError):
    pass


class UploadStore:
    def __init__(self, root: Path, secret: bytes | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self._secret = secret or secrets.token_bytes(32)
        """Per process: a restart only invalidates upload links that were not used yet."""
        self.max_bytes = max_bytes

    def path(self, team_id: str, files_hash: str) -> Path:
        return self.root / team_id / f"{files_hash}.tar"

    def present(self, team_id: str, files_hash: str) -> bool:
        return self.path(team_id, files_hash).is_file()

    def token(self, team_id: str, template_id: str, files_hash: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + TOKEN_TTL_S)
        return f"{expires}.{self._mac(team_id, template_id, files_hash, expires)}.{team_id}"

    def _mac(self, team_id: str, template_id: str, files_hash: str, expires: int) -> str:
        msg = f"{team_id}\n{template_id}\n{files_hash}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def check(self, token: str, template_id: str, files_hash: str) -> str:
        """The team the token was issued to; ``UploadError`` if forged or expired."""
        try:
            expires_s, mac, team_id = token.split(".", 2)
            expires = int(expires_s)
        except ValueError:
            raise UploadError("malformed upload token") from None
        if not hmac.compare_digest(mac, self._mac(team_id, template_id, files_hash, expires)):
            raise UploadError("invalid upload token")
        if expires < time.time():
            raise UploadError("upload link expired")
        return team_id

    async def receive(self, team_id: str, files_hash: str, chunks: AsyncIterable[bytes]) -> int:
        """Stream an upload to disk; it only becomes visible once it is a readable tar."""
        final = self.path(team_id, files_hash)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{files_hash}.{secrets.token_hex(4)}.part")
        size = 0
        try:
            with open(tmp, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadTooLarge(f"the upload is larger than this server's limit of {self.max_bytes} bytes "
                                             "(SANDLOT_UPLOAD_MAX_BYTES)")
                    handle.write(chunk)
            try:
                with tarfile.open(tmp, "r:*") as archive:
                    archive.getmembers()
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise UploadError(f"the upload is not a tar archive: {exc}") from None
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    def snapshot(self, team_id: str, files_hash: str, into: Path) -> Path | None:
        """The archive as it is now, at ``into`` (a hard link: a later upload replaces the
        stored name, never these bytes); ``None`` if it was not uploaded."""
        source = self.path(team_id, files_hash)
        try:
            os.link(source, into)
        except FileNotFoundError:
            return None
        except OSError:  # another filesystem
            try:
                shutil.copyfile(source, into)
            except FileNotFoundError:
                return None
        return into

    def discard(self, team_id: str, files_hash: str, like: Path) -> None:
        """Delete the stored archive if it still is the one ``like`` snapshotted (a
        re-upload in the meantime is left alone)."""
        stored = self.path(team_id, files_hash)
        try:
            if os.path.samefile(stored, like) or _same_bytes(stored, like):
                stored.unlink()
        except FileNotFoundError:
            pass


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def extract(archive: Path, dest: Path) -> None:
    """Unpack a build context into ``dest`` through :mod:`sandlot.tenant_fs`: no absolute
    or ``..`` names, nothing written through a symlink (a symlink followed by a file of the
    same name replaces the link), no device nodes; symlinks themselves are kept."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tenant_fs.Tree(dest) as tree:
            tenant_fs.extract_tar(archive, tree)
    except tenant_fs.TreeError as exc:
        raise UploadError(f"the COPY archive was refused: {exc}") from None
    except OSError as exc:
        raise UploadError(f"the COPY archive could not be unpacked: {exc.strerror or exc}"
                          + (f" ({exc.filename})" if exc.filename else "")) from None


def matches(context: Path, src: str) -> list[str]:
    """Paths (relative to the context) a COPY source glob selects, as Docker does; the
    context is listed by fd and never through a symlink that leaves it."""
    with tenant_fs.Tree(context) as tree:
        return tenant_fs.match_glob(tree, src.rstrip("/") or ".")
