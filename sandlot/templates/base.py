"""Build the ``base`` template rootfs (Debian bookworm minbase + dev tools).

Usage: ``python -m sandlot.templates.base <dest>``  (dest is the rootfs dir,
e.g. ``<data_dir>/templates/base/rootfs``).

The build runs once: it goes into a temp dir next to ``dest`` and is renamed
into place atomically; a marker file inside the rootfs records completion.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from sandlot.dir_swap import swap_in
from sandlot.runtime.mmdebstrap import SUITE, Progress, default_progress, run_mmdebstrap

log = logging.getLogger(__name__)

MARKER = ".sandlot-template"

BASE_PACKAGES = [
    "bash", "coreutils", "python3", "python3-pip", "python3-venv", "git", "curl",
    "ca-certificates", "sudo", "procps", "iproute2", "less", "nano", "iputils-ping",
    "findutils", "grep", "sed", "tar", "gzip", "xz-utils", "unzip", "wget",
]


def _customize_hooks() -> list[str]:
    sudoers = "user ALL=(ALL:ALL) NOPASSWD: ALL"
    hooks = [
        'chroot "$1" groupadd -g 1000 user',
        'chroot "$1" useradd -m -u 1000 -g 1000 -s /bin/bash -d /home/user user',
        f'echo "{sudoers}" > "$1/etc/sudoers.d/user" && chmod 0440 "$1/etc/sudoers.d/user"',
        # hostname-independent: these are written per sandbox by the runtime
        'rm -f "$1/etc/hostname" "$1/etc/resolv.conf" && : > "$1/etc/resolv.conf"',
        'printf "127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n" > "$1/etc/hosts"',
        'chmod 1777 "$1/tmp"',
        'rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*_Packages',
    ]
    return [f"--customize-hook={h}" for h in hooks]


def is_built(dest: Path) -> bool:
    return (Path(dest) / MARKER).is_file()


def build_base_rootfs(dest: Path | str, *, progress: Progress | None = None,
                      force: bool = False) -> Path:
    """Build the base rootfs at ``dest`` unless it is already there. Returns ``dest``."""
    dest = Path(dest)
    progress = progress or default_progress
    if is_built(dest) and not force:
        progress(f"base template already built at {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    try:
        run_mmdebstrap(tmp, variant="minbase", include=BASE_PACKAGES,
                       extra_args=_customize_hooks(), progress=progress)
        (tmp / MARKER).write_text(f"base {SUITE} built {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"base template built at {dest} in {time.monotonic() - t0:.1f}s")
    return dest


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="Build the Sandlot base template rootfs")
    p.add_argument("dest", type=Path)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    build_base_rootfs(a.dest, force=a.force, progress=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
