"""A sandbox disk the kernel made read-only (the host's disk filled up under it) is repaired
when it is mounted again at resume, instead of leaving the paused sandbox unresumable."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from sandlot.runtime import disk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a loop device")


def _loop_device(target: Path) -> str:
    return Path(subprocess.run(["findmnt", "-no", "SOURCE", str(target)], capture_output=True, text=True,
                               check=True).stdout.strip()).name


def test_a_sandbox_disk_ext4_made_read_only_is_repaired_and_keeps_its_files(tmp_path: Path) -> None:
    sdir = tmp_path / "sbx"
    sdir.mkdir()
    target = asyncio.run(disk.create(sdir, 64))
    try:
        (target / "kept.txt").write_text("before")
        subprocess.run(["umount", str(target)], check=True)
        subprocess.run(["tune2fs", "-e", "remount-ro", str(disk.image_path(sdir))], check=True,
                       capture_output=True)
        asyncio.run(disk.mount(sdir))
        # what a failed write to the image does ("EXT4-fs error … Remounting filesystem read-only"):
        # the superblock goes read-only, the mount's flags (statvfs) don't show it
        Path(f"/sys/fs/ext4/{_loop_device(target)}/trigger_fs_error").write_text("1")
        with pytest.raises(OSError):
            (target / "work").mkdir()
        assert not os.statvfs(target).f_flag & os.ST_RDONLY

        asyncio.run(disk.mount(sdir))

        (target / "work").mkdir()
        assert (target / "kept.txt").read_text() == "before"
        asyncio.run(disk.mount(sdir))   # a writable disk is left as it is
        assert os.path.ismount(target) and (target / "work").is_dir()
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_a_read_only_mount_of_a_sandbox_disk_is_repaired_too(tmp_path: Path) -> None:
    sdir = tmp_path / "sbx"
    sdir.mkdir()
    target = asyncio.run(disk.create(sdir, 64))
    try:
        (target / "kept.txt").write_text("before")
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
        asyncio.run(disk.mount(sdir))
        (target / "work").mkdir()
        assert (target / "kept.txt").read_text() == "before"
    finally:
        subprocess.run(["umount", str(target)], check=False)
