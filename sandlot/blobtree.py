"""Directory trees in the blob store: a layer dir, a CRIU image dir, a sandbox's upper dir.

A tree travels as one POSIX (pax) tar made by GNU tar with ``--xattrs --xattrs-include=*
--numeric-owner``: overlay whiteouts (0:0 char devices), ``trusted.overlay.*`` and
``security.capability`` xattrs, host uids of a user-namespace range, setuid bits and hard
links must come back exactly, and Python's ``tarfile`` restores no xattrs.

Unpacking is where it gets dangerous: the store may be shared storage someone else can
write, and the tree's content was shaped by a tenant. So, in order:
1. the object is fetched to a local file and its sha256 checked (``blobstore``: a corrupt or
   swapped object is refused before a byte of it is interpreted);
2. that same local file is listed with ``tarfile`` and refused unless every member is a
   relative, normalised name (no ``/``-prefix, no ``..``), of a type we produce — regular file,
   directory, symlink (kept as-is, never followed), whiteout char device 0:0, or a hard link
   to an earlier regular-file member — and no member lies under a symlink member (so nothing
   can be written through a link, whatever order GNU tar uses);
3. only then GNU tar extracts it into a fresh, empty directory (``--no-overwrite-dir``,
   ``--same-owner``, ``-p``, xattrs), which is renamed into place when complete.
Validating the exact bytes that are then extracted (a local, verified file) closes the
check-then-use gap a streamed extraction would have.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path, PurePosixPath

from sandlot.blobstore import BlobError, BlobStore

TAR = "tar"
XATTRS = ("--xattrs", "--xattrs-include=*")


class UnsafeTree(BlobError):
    """A tree's tar holds something we never produce (a path escaping it, a device, …)."""


def _norm(name: str, what: str) -> str:
    if name.startswith("/"):
        raise UnsafeTree(f"{what} {name!r:.200} is absolute")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if any(p == ".." for p in parts):
        raise UnsafeTree(f"{what} {name!r:.200} contains '..'")
    return "/".join(parts)


def validate(archive: Path) -> int:
    """Refuse a tar holding anything but what ``pack`` makes (module docstring); member count."""
    regular: set[str] = set()
    links: set[str] = set()
    names: list[str] = []
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                name = _norm(member.name, "member")
                if member.isdir():
                    pass
                elif member.isreg() and not member.issparse():
                    regular.add(name)
                elif member.issym():
                    links.add(name)
                elif member.islnk():
                    target = _norm(member.linkname, "hard link target")
                    if target not in regular or target in links:
                        raise UnsafeTree(f"hard link {name!r:.200} points at {member.linkname!r:.200}, "
                                         "not an earlier regular file of the tree")
                    regular.add(name)
                elif member.ischr() and member.devmajor == 0 and member.devminor == 0:
                    pass   # an overlay whiteout
                else:
                    raise UnsafeTree(f"member {name!r:.200} has a type the tree may not hold "
                                     f"({member.type!r}: devices, fifos and sparse members are refused)")
                if name == "" and not member.isdir():
                    raise UnsafeTree("the tree's root is not a directory")
                names.append(name)
    except tarfile.TarError as exc:
        raise UnsafeTree(f"not a readable tar: {exc}") from None
    for name in names:
        parent = PurePosixPath(name).parent
        while str(parent) not in (".", ""):
            if str(parent) in links or str(parent) in regular:
                raise UnsafeTree(f"member {name!r:.200} lies under the symlink or file {str(parent)!r:.200}")
            parent = parent.parent
    return len(names)


Parts = list[tuple[Path, list[str]]]
"""(dir, names in it) pairs packed into one tree: a tree may gather files of several host dirs."""


def pack(src: Path, out: Path) -> None:
    """``src``'s content (not ``src`` itself) as a pax tar at ``out``."""
    pack_parts([(src, ["."])], out)


def pack_parts(parts: Parts, out: Path) -> None:
    """The named entries of each dir (recursively) as one pax tar at ``out``."""
    args: list[str] = []
    for directory, names in parts:
        args += ["--directory", str(directory), *names] if names else []   # (our own names, no "-" first)
    proc = subprocess.run([TAR, "--create", "--format=posix", *XATTRS, "--numeric-owner", "--file", str(out),
                           *args], capture_output=True, text=True)
    # rc 1: "file changed as we read it"; never true for the quiescent trees we pack, but not fatal
    if proc.returncode not in (0, 1):
        raise BlobError(f"tar of {parts[0][0]} failed: {proc.stderr.strip()[-500:]}")


def unpack(archive: Path, dest: Path) -> None:
    """Validate ``archive`` then extract it into ``dest`` (which must not exist yet)."""
    validate(archive)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.unpack")
    tmp.mkdir(parents=True)
    try:
        proc = subprocess.run([TAR, "--extract", *XATTRS, "--numeric-owner", "--same-owner", "--same-permissions",
                               "--no-overwrite-dir", "--delay-directory-restore", "--file", str(archive),
                               "--directory", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BlobError(f"unpacking into {dest} failed: {proc.stderr.strip()[-500:]}")
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(store: BlobStore, src: Path | Parts, scratch: Path) -> str:
    """Tar ``src`` (a dir's content, or :data:`Parts`) into the store; its digest. ``scratch``:
    a dir for the temporary tar. A tree that :func:`validate` would refuse on arrival (a tenant
    made a fifo or a hard link to a symlink on its disk) is refused here already: never published."""
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f"{uuid.uuid4().hex}.tar"
    try:
        pack_parts([(src, ["."])] if isinstance(src, Path) else src, tmp)
        validate(tmp)
        return store.put_file(tmp)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(store: BlobStore, digest: str, dest: Path) -> None:
    """The tree ``digest`` names at ``dest`` (created; its parent must exist): fetched,
    verified, validated, unpacked (module docstring). The temporary tar sits beside ``dest``."""
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tar")
    try:
        store.fetch(digest, tmp)
        unpack(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
