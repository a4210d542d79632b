"""COPY sources: content-addressed archives uploaded by the SDK through expiring URLs.

The SDK PUTs the tar(.gz) of a COPY step's files *without* the API key, so the
upload URL carries its own HMAC token (team, template, hash, expiry). Archives
are stored per team under ``<templates>/files/<team>/<filesHash>.tar``.

``filesHash`` is not a digest of the archive (``files_hash.py``), so an upload cannot be
checked when it arrives: a build checks the exact bytes it extracts (``snapshot``) and
keys the COPY layer by their sha256, so one team's upload never reaches another's build.

Under ``sandlot node`` (issue 17) the link may be signed by one node, the upload received by
another and the build run by a third: links are signed with a key derived from the
deployment's ``SANDLOT_NODE_TOKEN``, a received archive is also put in the blob store with a
ref ``uploads/<team>/<filesHash>`` naming its digest, and a node without the archive fetches
it from there (digest verified; the build then checks its content as always).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import shutil
import tarfile
import time
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

from sandlot import blobstore, tenant_fs
from sandlot.settings import Settings

TOKEN_TTL_S = 3600
DEFAULT_MAX_BYTES = 1 << 30


class UploadError(Exception):
    pass


class UploadTooLarge(UploadError):
    pass


def cluster_options(settings: Settings) -> dict[str, Any]:
    """``UploadStore`` keywords for this server's role: under ``sandlot node`` links every node
    accepts and archives every node can read (module docstring); nothing on a single box."""
    if settings.role != "node":
        return {}
    options: dict[str, Any] = {"remote_url": settings.effective_blob_url}
    if settings.node_token:
        options["secret"] = hmac.new(settings.node_token.encode(), b"sandlot upload links", hashlib.sha256).digest()
    return options


class UploadStore:
    def __init__(self, root: Path, secret: bytes | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 remote_url: str | None = None) -> None:
        self.root = root
        self._secret = secret or secrets.token_bytes(32)
        """Per process: a restart only invalidates upload links that were not used yet."""
        self.max_bytes = max_bytes
        self._remote_url = remote_url
        self._remote: blobstore.BlobStore | None = None

    @property
    def remote(self) -> blobstore.BlobStore | None:
        """The cluster's blob store (``sandlot node``), else ``None``."""
        if self._remote is None and self._remote_url is not None:
            self._remote = blobstore.open_store(self._remote_url)
        return self._remote

    def path(self, team_id: str, files_hash: str) -> Path:
        return self.root / team_id / f"{files_hash}.tar"

    @staticmethod
    def _ref(team_id: str, files_hash: str) -> str:
        return f"uploads/{team_id}/{files_hash}"

    def present(self, team_id: str, files_hash: str) -> bool:
        if self.path(team_id, files_hash).is_file():
            return True
        remote = self.remote
        if remote is None:
            return False
        try:
            return remote.get_ref(self._ref(team_id, files_hash)) is not None
        except blobstore.BlobError:
            return False

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
        remote = self.remote
        if remote is not None:   # readable by whichever node runs the build
            digest = await asyncio.to_thread(remote.put_file, final)
            await asyncio.to_thread(remote.put_ref, self._ref(team_id, files_hash), digest)
        return size

    def snapshot(self, team_id: str, files_hash: str, into: Path) -> Path | None:
        """The archive as it is now, at ``into`` (a hard link: a later upload replaces the
        stored name, never these bytes); ``None`` if it was not uploaded."""
        source = self.path(team_id, files_hash)
        try:
            os.link(source, into)
        except FileNotFoundError:
            return self._fetch(team_id, files_hash, into)
        except OSError:  # another filesystem
            try:
                shutil.copyfile(source, into)
            except FileNotFoundError:
                return None
        return into

    def _fetch(self, team_id: str, files_hash: str, into: Path) -> Path | None:
        """Another node received it: the blob store's copy (digest verified), or ``None``."""
        remote = self.remote
        if remote is None:
            return None
        try:
            digest = remote.get_ref(self._ref(team_id, files_hash))
            if digest is None:
                return None
            blobstore.copy_out(remote, digest, into)
        except blobstore.BlobMissing:
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
