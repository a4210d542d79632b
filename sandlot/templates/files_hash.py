"""Does an uploaded COPY archive hold what its ``filesHash`` claims?

The SDKs' ``filesHash`` is not a digest of the archive: it is sha256 over
``COPY {src} {dest}`` and then, for each entry in the order the archive lists them,
its relative path, ``str(st_mode)``, its size and its content (or symlink target).
``src``/``dest`` only arrive with the build's steps, so the check runs at build time,
on the exact bytes the build will extract (``UploadStore.snapshot``). Recipes:

- ``archive``: sha256 of the archive's bytes (Sandlot's own Prime build contexts);
- ``sdk``: ``e2b.template.utils.calculate_files_hash`` (Python) — a directory has no size;
- the JS SDK's ``calculateFilesHash`` is the same except that every entry has ``stats.size``, a
  directory's too, which a tar does not record: a JS archive *with directories* can
  not be checked (``verify`` answers ``None``; the layer cache key still carries the
  archive's own digest, so such an archive can only ever reach its own team's builds).
"""

from __future__ import annotations

import hashlib
import stat
import tarfile
from functools import partial
from pathlib import Path

CHUNK = 1 << 20


class Mismatch(Exception):
    """The archive cannot be what ``filesHash`` describes (under any SDK's recipe)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _st_mode(member: tarfile.TarInfo) -> int:
    """``st_mode`` the SDK hashed: a tar keeps the permission bits, the type is the entry's."""
    if member.isreg() or member.islnk():  # a hard link is a regular file on the client
        kind = stat.S_IFREG
    elif member.isdir():
        kind = stat.S_IFDIR
    elif member.issym():
        kind = stat.S_IFLNK
    elif member.isfifo():
        kind = stat.S_IFIFO
    elif member.ischr():
        kind = stat.S_IFCHR
    elif member.isblk():
        kind = stat.S_IFBLK
    else:
        raise Mismatch(f"archive entry {member.name!r} has an unknown type")
    return kind | (member.mode & 0o7777)


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def verify(archive: Path, archive_sha256: str, src: str, dest: str, files_hash: str) -> str | None:
    """The recipe that reproduces ``files_hash`` (``archive`` or ``sdk``); ``None`` when the
    archive has directories and does not match the Python recipe (it may be the JS SDK's,
    which hashes directory sizes a tar does not keep); ``Mismatch`` when no SDK could have
    produced it. Without directories both SDKs hash exactly the same bytes."""
    if archive_sha256 == files_hash:
        return "archive"
    digest = hashlib.sha256(_text(f"COPY {src} {dest}"))
    has_dirs = False
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                mode = str(_st_mode(member)).encode()
                digest.update(_text(member.name))
                if member.isdir():
                    has_dirs = True
                    digest.update(mode)
                elif member.issym():
                    target = _text(member.linkname)
                    digest.update(mode + str(len(target)).encode() + target)
                else:
                    # TarFile's private hard-link resolver (the one extractfile uses); not in typeshed.
                    body = tar._find_link_target(member) if member.islnk() else member  # type: ignore[attr-defined]
                    digest.update(mode + str(body.size if body.isreg() else 0).encode())
                    if body.isreg():
                        handle = tar.extractfile(body)
                        assert handle is not None
                        for chunk in iter(partial(handle.read, CHUNK), b""):
                            digest.update(chunk)
    except (tarfile.TarError, EOFError, OSError, KeyError) as exc:
        raise Mismatch(f"the archive cannot be read: {exc}") from None
    if digest.hexdigest() == files_hash:
        return "sdk"
    if has_dirs:
        return None
    raise Mismatch("its files do not hash to the step's filesHash")
