"""Per-sandbox overlayfs through libc mount(2)/umount2(2) (no subprocess)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .idmap import IdRange

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MNT_DETACH = 2
EINVAL = 22
ENOENT = 2


def _esc(p: Path | str) -> str:
    # overlay option values: escape the separators
    return str(p).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def mount_overlay(lower: list[Path], upper: Path, work: Path, merged: Path, *,
                  idmap: "IdRange | None" = None) -> None:
    """Mount the overlay; with ``idmap`` its lower layers are seen through the range
    (``runtime/idmap.py``): each is bound idmapped under ``<merged>.lower/<i>`` for the
    mount(2) call only, since overlay keeps private clones of its layers' mounts."""
    if not lower:
        raise ValueError("overlay needs at least one lower layer")
    for p in lower:
        if not Path(p).is_dir():
            raise FileNotFoundError(f"layer {p} is not a directory")
    staged: list[Path] = []
    if idmap is not None:
        from . import idmap as _idmap
        base = merged.with_name(merged.name + ".lower")
        base.mkdir(exist_ok=True)
        try:
            for i, p in enumerate(lower):
                target = base / str(i)
                target.mkdir(exist_ok=True)
                _idmap.idmapped_bind(Path(p), target, idmap)
                staged.append(target)
        except BaseException:
            _drop_staged(staged, base)
            raise
        lower = staged
    fds: list[int] = []
    try:
        # every mountinfo the sandbox can read shows these strings: fd paths, not host paths
        for p in [*lower, upper, work]:
            fds.append(os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        names = [f"/proc/self/fd/{fd}" for fd in fds]
        opts = "lowerdir={},upperdir={},workdir={}".format(":".join(names[:-2]), names[-2], names[-1])
        if _libc.mount(b"overlay", os.fsencode(str(merged)), b"overlay", 0, opts.encode()) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount overlay on {merged}: {os.strerror(err)} (lower {lower}, upper {upper})")
    finally:
        for fd in fds:
            os.close(fd)
        if staged:
            _drop_staged(staged, staged[0].parent)


def _drop_staged(staged: list[Path], base: Path) -> None:
    from . import idmap as _idmap
    for target in staged:
        _idmap.detach(target)
        target.rmdir()
    base.rmdir()


def umount(path: Path | str, *, lazy_fallback: bool = True) -> bool:
    """Unmount ``path``. Returns True if something was unmounted. Not-mounted is fine."""
    b = os.fsencode(str(path))
    if _libc.umount2(b, 0) == 0:
        return True
    err = ctypes.get_errno()
    if err in (EINVAL, ENOENT):
        return False
    if lazy_fallback and _libc.umount2(b, MNT_DETACH) == 0:
        return True
    err = ctypes.get_errno()
    if err in (EINVAL, ENOENT):
        return False
    raise OSError(err, f"umount {path}: {os.strerror(err)}")


def mount_type(path: Path | str) -> str | None:
    """The filesystem type mounted at ``path`` (the topmost mount), ``None`` if none is."""
    p = os.path.realpath(str(path))
    found = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4].encode().decode("unicode_escape") == p:
                    found = fields[fields.index("-") + 1]
    except OSError:
        pass
    return found


def is_mountpoint(path: Path | str) -> bool:
    return mount_type(path) is not None


def mounts_under(prefix: Path | str) -> list[str]:
    pre = os.path.realpath(str(prefix))
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == pre or mp.startswith(pre + "/"):
                out.append(mp)
    return out


def has_bash(layers: list[Path]) -> bool:
    """Whether the merged rootfs has bash (checked on the host, topmost layer first).

    Only real directories are walked, never the image's symlinks: an absolute link
    would point into the host."""
    for rel in ("usr/bin/bash", "bin/bash"):
        for layer in layers:
            parent = layer / rel.rsplit("/", 1)[0]
            if parent.is_symlink() or not parent.is_dir():
                continue
            try:
                mode = os.lstat(layer / rel).st_mode
            except OSError:
                continue
            if stat.S_ISCHR(mode):  # an overlay whiteout: deleted in this layer
                break
            return True
    return False
