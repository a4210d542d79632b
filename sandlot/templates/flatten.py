"""Squash a deep layer stack into one layer.

overlayfs takes its lower dirs in one mount option string, which the mount(2)
call limits to a page, so builds with many steps are flattened: the stack is
mounted read-only (whiteouts resolved by overlayfs itself) and copied with
owners, modes, xattrs and hard links preserved. The layers are tenant-made trees, so the
copy is :func:`sandlot.tenant_fs.copy_tree` (no symlink in them is ever followed).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from sandlot import tenant_fs


def flatten(layers: list[Path], dest: Path, mountpoint: Path) -> None:
    """Copy the merged view of ``layers`` (topmost first) to ``dest``."""
    mountpoint.mkdir(parents=True)
    lower = ":".join(str(p) for p in layers)
    try:
        if len(layers) == 1:
            subprocess.run(["mount", "--bind", "-o", "ro", str(layers[0]), str(mountpoint)], check=True, capture_output=True)
        else:
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(mountpoint)],
                           check=True, capture_output=True)
        try:
            tenant_fs.copy_tree(mountpoint, dest)
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)
    finally:
        mountpoint.rmdir()
