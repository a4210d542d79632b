"""Run ``mmdebstrap``: the one Debian tree builder both the base template and envd's runtime use.

It lives in the runtime package (not ``templates``) because ``runtime/envd_bundle.py``
needs it too: the runtime sits below the templates and must not import upward.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

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


def default_progress(line: str) -> None:
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
    progress = progress or default_progress
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
