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
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from sandlot.dir_swap import swap_in

log = logging.getLogger(__name__)

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
MARKER = ".sandlot-template"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

BASE_PACKAGES = [
    "bash", "coreutils", "python3", "python3-pip", "python3-venv", "git", "curl",
    "ca-certificates", "sudo", "procps", "iproute2", "less", "nano", "iputils-ping",
    "findutils", "grep", "sed", "tar", "gzip", "xz-utils", "unzip", "wget",
]

# leave out docs, man pages, locales (keep copyright files)
DPKG_EXCLUDES = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
]

APT_OPTS = [
    'Acquire::Check-Valid-Until "false"',
    'Acquire::Check-Date "false"',
    'Acquire::Retries "3"',
]

Progress = Callable[[str], None]


def _default_progress(line: str) -> None:
    log.info("%s", line)


def run_mmdebstrap(
    target: Path,
    *,
    variant: str,
    include: Iterable[str],
    extra_args: Iterable[str] = (),
    progress: Progress | None = None,
    mirror: str = MIRROR,
) -> None:
    """Run mmdebstrap into ``target`` (a directory that must not exist or be empty),
    streaming its output lines to ``progress``."""
    progress = progress or _default_progress
    args = [
        "mmdebstrap", "--mode=root", f"--variant={variant}",
        "--include=" + ",".join(include),
        *(f"--aptopt={o}" for o in APT_OPTS),
        *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
    ]
    if HOST_CA_BUNDLE.exists():
        # lets apt trust https sources behind the TLS-intercepting proxy
        args.append(f'--aptopt=Acquire::https::CaInfo "{HOST_CA_BUNDLE}"')
    args += [*extra_args, SUITE, str(target), mirror]
    progress("running: " + " ".join(args))
    t0 = time.monotonic()
    env = dict(os.environ, LC_ALL="C.UTF-8", DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", env=env)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if not line:
            continue
        tail = (tail + [line])[-30:]
        progress(f"[{time.monotonic() - t0:5.1f}s] {line}")
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"mmdebstrap failed (rc={rc}):\n" + "\n".join(tail))


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
    progress = progress or _default_progress
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
