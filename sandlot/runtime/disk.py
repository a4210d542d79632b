"""A sandbox's writable disk with a real size limit: a sparse ext4 image, loop-mounted.

The kernel here has no quota support (``CONFIG_QUOTA``/``XFS_QUOTA`` are off), so a
per-directory limit on the overlay upper dir is impossible; a small filesystem of its
own gives ``diskSizeMB`` teeth instead. Writes past it fail with ENOSPC inside the
sandbox, as on E2B, and ``df /`` there shows the sandbox's size. The image is sparse
and mounted with ``discard``, so it takes host space only for what the sandbox keeps.
``mount -o loop`` sets autoclear: unmounting frees the loop device.

Cost: ~30 ms (``mkfs.ext4`` with lazy init + ``mount``) per cold create; warm-pool
sandboxes pay it ahead of time.
"""
from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

from sandlot import tenant_fs

from .base import SandboxRuntimeError

IMAGE = "disk.img"
MOUNT = "disk"
MKFS = "/usr/sbin/mkfs.ext4"
FSCK = "/usr/sbin/e2fsck"
MOUNT_OPTIONS = "loop,noinit_itable,discard,nosuid,nodev"
"""``noinit_itable``: the sparse image reads as zeros, so the kernel needn't zero inode tables."""


def out_of_space(exc: BaseException) -> bool:
    """Whether a full disk is behind ``exc``: ENOSPC anywhere in its chain, or its text
    naming it (runc and CRIU errors, SQLite's SQLITE_FULL "database or disk is full",
    PostgreSQL's "No space left on device")."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        text = str(getattr(seen, "orig", seen))
        if "ENOSPC" in text or any(s in text.lower() for s in ("no space left", "database or disk is full")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def image_path(sandbox_dir: Path) -> Path:
    return sandbox_dir / IMAGE


def mount_path(sandbox_dir: Path) -> Path:
    """Where the overlay's ``upper/`` and ``work/`` live (a plain dir when unlimited)."""
    return sandbox_dir / MOUNT


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SandboxRuntimeError(f"{os.path.basename(argv[0])} failed: {err.decode(errors='replace').strip()[-500:]}")


async def create(sandbox_dir: Path, size_mb: int | None) -> Path:
    """Make and mount the sandbox's disk; ``None`` means no limit (a plain directory)."""
    target = mount_path(sandbox_dir)
    target.mkdir()
    if size_mb is None:
        return target
    image = image_path(sandbox_dir)
    with open(image, "wb") as handle:
        handle.truncate(int(size_mb) * 1024 * 1024)
    await _run(MKFS, "-q", "-F", "-m", "0", "-J", "size=16", "-L", "sandbox",
               "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0", str(image))
    await mount(sandbox_dir)
    return target


async def mount(sandbox_dir: Path) -> None:
    """Mount an existing image (again, e.g. for a paused sandbox after a host reboot).

    An image the kernel made read-only is repaired first: when the host's filesystem fills
    up, writes to the sparse image fail, ext4 aborts its journal and remounts read-only, and
    a paused sandbox could never resume (its overlay ``work/`` can't be made) though the
    host has room again (bench/soak.py's full-disk fault). Only called with the sandbox's
    rootfs unmounted (create, resume), so nothing is using the image meanwhile."""
    image = image_path(sandbox_dir)
    target = mount_path(sandbox_dir)
    if not image.exists():
        return
    if os.path.ismount(target):
        if _writable(target):
            return
        await _run("/usr/bin/umount", str(target))
        await _fsck(image)
    target.mkdir(exist_ok=True)
    await _run("/usr/bin/mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(target))


def _writable(target: Path) -> bool:
    """False when the kernel refuses writes: remounted read-only, or a journal aborted after a
    failed write (EROFS without the read-only flag). The image's root dir is the host's (the
    sandbox only has ``upper/``), so the probe dir can't collide with tenant files."""
    if os.statvfs(target).f_flag & os.ST_RDONLY:
        return False
    probe = target / ".sandlot-write-check"
    try:
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as exc:
        return exc.errno not in (errno.EROFS, errno.EIO)
    return True


async def _fsck(image: Path) -> None:
    """``e2fsck -fy``: replay what the journal has and fix the rest; exit 1 (fixed) is success."""
    proc = await asyncio.create_subprocess_exec(FSCK, "-f", "-y", str(image), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode not in (0, 1):
        raise SandboxRuntimeError(f"e2fsck could not repair the sandbox's disk (exit {proc.returncode}): "
                                  f"{out.decode(errors='replace').strip()[-500:]}")


async def copy_upper(src: Path, dst: Path) -> None:
    """Copy an overlay upper dir as-is — owners, modes, xattrs (opaque dirs), whiteouts,
    hard links, unix sockets — with :func:`sandlot.tenant_fs.copy_tree`, which follows no
    symlink the sandbox made (``cp -a`` took paths; as fast on a 25k-file tree)."""
    try:
        await asyncio.to_thread(tenant_fs.copy_tree, src, dst)
    except (OSError, tenant_fs.TreeError) as exc:
        raise SandboxRuntimeError(f"copying the sandbox's disk failed: {exc}") from exc


def usage(sandbox_dir: Path) -> int | None:
    """Bytes in use on a limited disk (O(1), no tree walk); ``None`` if it isn't one."""
    target = mount_path(sandbox_dir)
    if not os.path.ismount(target):
        return None
    st = os.statvfs(target)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
