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


def test_a_read_only_sandbox_disk_is_repaired_and_keeps_its_files(tmp_path: Path) -> None:
    sdir = tmp_path / "sbx"
    sdir.mkdir()
    target = asyncio.run(disk.create(sdir, 64))
    try:
        (target / "kept.txt").write_text("before")
        subprocess.run(["sync"], check=True)
        # what ext4 does on its own after a failed write to the image ("Remounting filesystem read-only")
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
        with pytest.raises(OSError):
            (target / "work").mkdir()

        asyncio.run(disk.mount(sdir))

        assert not os.statvfs(target).f_flag & os.ST_RDONLY
        (target / "work").mkdir()
        assert (target / "kept.txt").read_text() == "before"
        asyncio.run(disk.mount(sdir))   # a writable disk is left as it is
        assert os.path.ismount(target)
    finally:
        subprocess.run(["umount", str(target)], check=False)
