"""A volume's storage on the host: a sparse ext4 image, loop-mounted once while anyone uses it.

Like a sandbox's disk (``disk.py``), a small filesystem of its own gives the volume's size
teeth (this kernel has no quotas): writes past it fail with ENOSPC, inside every sandbox
that mounts it and through the volume-content API alike. The image is mounted at
``<dir>/mnt`` (``nosuid,nodev``); what tenants see is ``mnt/data`` (``lost+found`` and the
root stay the host's), bound read-write into each sandbox that mounts the volume — one
superblock shared by all of them, so they see each other's writes at once.

One image must never be mounted twice at a time (two ext4 superblocks on one file corrupt
it): every mount goes through :func:`mount`, which finds an existing mount first, and
``mount -o loop`` re-uses the loop device a file is already attached to.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from .base import SandboxRuntimeError
from .disk import MKFS
from .overlay import umount

IMAGE = "volume.img"
MOUNT = "mnt"
DATA = "data"
MOUNT_OPTIONS = "loop,noinit_itable,discard,nosuid,nodev"


def image_path(volume_dir: Path) -> Path:
    return volume_dir / IMAGE


def mount_path(volume_dir: Path) -> Path:
    return volume_dir / MOUNT


def data_path(volume_dir: Path) -> Path:
    """The tenant's tree: what sandboxes see at their mount path and the content API's ``/``."""
    return volume_dir / MOUNT / DATA


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise SandboxRuntimeError(f"{os.path.basename(argv[0])} failed: {text[-500:]}")
    return text


async def create(volume_dir: Path, size_mb: int, root_uid: int, root_gid: int) -> None:
    """Make the image (sparse) and its ``data`` root, owned by the sandboxes' root (host ids
    ``root_uid``/``root_gid``) and open to every user inside (0777, as a fresh E2B volume),
    then leave it unmounted. The dirs above are group ``root_gid``, 0710: runc resolves a
    bind source as the sandbox's root."""
    volume_dir.mkdir(mode=0o710)
    try:
        os.chown(volume_dir, 0, root_gid)
        os.chmod(volume_dir, 0o710)
        image = image_path(volume_dir)
        with open(image, "wb") as handle:
            handle.truncate(int(size_mb) * 1024 * 1024)
        await _run(MKFS, "-q", "-F", "-m", "0", "-J", "size=4", "-L", "volume",
                   "-E", f"lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:{root_gid}", str(image))
        await mount(volume_dir)
        try:
            top = mount_path(volume_dir)
            os.chmod(top, 0o710)
            data = data_path(volume_dir)
            data.mkdir()
            os.chown(data, root_uid, root_gid)
            os.chmod(data, 0o777)
        finally:
            await unmount(volume_dir)
    except BaseException:
        await remove(volume_dir)
        raise


def is_mounted(volume_dir: Path) -> bool:
    return os.path.ismount(mount_path(volume_dir))


async def mount(volume_dir: Path) -> None:
    """Mount the image at ``mnt`` unless it is mounted already."""
    target = mount_path(volume_dir)
    image = image_path(volume_dir)
    if not image.exists():
        raise SandboxRuntimeError(f"the volume's image is missing ({image.parent.name})")
    if is_mounted(volume_dir):
        return
    target.mkdir(mode=0o710, exist_ok=True)
    await _run("/usr/bin/mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(target))


async def unmount(volume_dir: Path) -> bool:
    """Unmount (no lazy detach: a busy volume stays mounted and is retried later); the loop
    device goes with the last mount (autoclear). Whether it is unmounted now."""
    target = mount_path(volume_dir)
    if not is_mounted(volume_dir):
        return True
    try:
        umount(target, lazy_fallback=False)
    except OSError:
        return False
    return not is_mounted(volume_dir)


async def remove(volume_dir: Path) -> None:
    """The volume's image and dirs; refuses (raises) while it is still mounted."""
    if not await unmount(volume_dir):
        raise SandboxRuntimeError("the volume is still in use on the host")
    await asyncio.to_thread(shutil.rmtree, volume_dir, True)


def usage(volume_dir: Path) -> tuple[int, int] | None:
    """(bytes used, bytes total) of a mounted volume."""
    if not is_mounted(volume_dir):
        return None
    st = os.statvfs(mount_path(volume_dir))
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
