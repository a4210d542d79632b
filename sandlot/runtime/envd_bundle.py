"""Read-only, self-contained Python runtime for the in-sandbox agent (envd).

Layout of ``<runtime>`` (bind-mounted read-only at ``/.sandlot`` in each sandbox):

* a minimal Debian bookworm tree (``mmdebstrap --variant=extract``) with
  python3.11 (``python3.11-minimal`` + ``libpython3.11-stdlib``) and the libs it needs
  (glibc, libssl3, libsqlite3, libffi, ...);
* ``opt/envd/site``: envd's pip deps (``pip install --target``);
* ``opt/envd/apps/<digest>/sandlot``: a copy of ``sandlot/__init__.py`` + ``sandlot/envd/`` +
  ``sandlot/protocol/``,
  one dir per content digest (added by :func:`refresh_envd_app` at server start when
  missing). Never replaced in place: a sandbox whose envd is starting, or a server of
  another version sharing the data dir, keeps the code it was launched with.

All ``.pyc`` are precompiled (the mount is read-only and envd runs with
``PYTHONDONTWRITEBYTECODE=1``). Absolute symlinks are rewritten to relative ones so
they resolve inside ``/.sandlot`` rather than in the sandbox rootfs.

:func:`envd_launch` returns argv/env that start envd through the runtime's own
dynamic loader, so it works whatever libc (or none) the sandbox rootfs has.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from sandlot.dir_swap import swap_in
from .mmdebstrap import run_mmdebstrap

log = logging.getLogger(__name__)

MOUNT_POINT = "/.sandlot"
MARKER = ".sandlot-envd-runtime"
# apt resolves dependencies (glibc, libssl3, libsqlite3, libffi, zlib, ...)
RUNTIME_PACKAGES = ["libc6", "python3.11-minimal", "libpython3.11-stdlib", "media-types", "tzdata"]
DEFAULT_ENVD_REQUIREMENTS = ["connectrpc==0.12.1", "protobuf", "uvicorn", "starlette",
                             "python-multipart"]
PY = "python3.11"
# Things we never need in the runtime; dropping them saves space and build time.
_PRUNE = ["dev", "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
          "usr/share/lintian", "var/cache/apt", "var/lib/apt/lists",
          f"usr/lib/{PY}/test", f"usr/lib/{PY}/idlelib", f"usr/lib/{PY}/tkinter",
          f"usr/lib/{PY}/turtledemo", f"usr/lib/{PY}/lib2to3/tests"]

Progress = Callable[[str], None]
_REPO_SANDLOT = Path(__file__).resolve().parent.parent   # .../sandlot


def _progress(p: Progress | None) -> Progress:
    return p or (lambda s: log.info("%s", s))


def _relativize_symlinks(root: Path) -> None:
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                continue
            tgt = os.readlink(p)
            if tgt.startswith("/"):
                new = os.path.relpath(root / tgt.lstrip("/"), Path(dirpath))
                p.unlink()
                os.symlink(new, p)


def _compile(paths: list[Path], root: Path, final: Path | None = None) -> None:
    """Precompile .py to .pyc with in-sandbox file names (``/.sandlot/...``; of ``final``
    when the tree is compiled before being renamed there).

    In-process when we run on CPython 3.11 (same bytecode as the runtime), else through
    the host's ``python3.11``."""
    for p in paths:
        if not p.exists():
            continue
        ddir = MOUNT_POINT + "/" + str((final or p).relative_to(root))
        if sys.version_info[:2] == (3, 11) and sys.implementation.name == "cpython":
            import compileall
            compileall.compile_dir(str(p), ddir=ddir, quiet=2, workers=1)
        else:
            subprocess.run([shutil.which("python3.11") or "/usr/bin/python3.11", "-m", "compileall",
                            "-q", "-j", "0", "-d", ddir, str(p)],
                           check=False, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def envd_requirements() -> list[str]:
    req = _REPO_SANDLOT / "envd" / "requirements.txt"
    if req.is_file():
        lines = [ln.split("#", 1)[0].strip() for ln in req.read_text().splitlines()]
        return [ln for ln in lines if ln]
    return list(DEFAULT_ENVD_REQUIREMENTS)


def is_built(runtime_dir: Path) -> bool:
    return (Path(runtime_dir) / MARKER).is_file()


def _req_hash(reqs: list[str]) -> str:
    import hashlib
    return hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16]


def _site_marker(runtime_dir: Path) -> Path:
    return Path(runtime_dir) / "opt/envd/site/.requirements-hash"


def _install_site(root: Path, reqs: list[str], pip: str | None, progress: Progress) -> None:
    """(Re)install envd's pip deps into ``root/opt/envd/site`` (temp dir + swap)."""
    site = root / "opt/envd/site"
    tmp = site.parent / f".site.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pip_cmd = [pip] if pip else [sys.executable, "-m", "pip"]
    progress("pip install --target opt/envd/site " + " ".join(reqs))
    try:
        r = subprocess.run([*pip_cmd, "install", "--quiet", "--no-compile", "--disable-pip-version-check",
                            "--no-warn-script-location", "--python-version", "3.11",
                            "--only-binary=:all:", "--implementation", "cp",
                            "--target", str(tmp), *reqs],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pip install failed: {r.stderr[-3000:]}")
        (tmp / ".requirements-hash").write_text(_req_hash(reqs))
        # compile under the final name
        swap_in(tmp, site)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _compile([site], root)


def loader_path(runtime_dir: Path) -> str:
    """Path (relative to the runtime root) of the dynamic loader, following no symlink."""
    for cand in ("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                 "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                 "usr/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"):
        p = Path(runtime_dir) / cand
        if p.exists() and not p.is_symlink():
            return cand
    raise FileNotFoundError(f"no ld-linux-x86-64.so.2 in {runtime_dir}")


def build_envd_runtime(runtime_dir: Path | str, *, progress: Progress | None = None,
                       force: bool = False, pip: str | None = None) -> Path:
    """Build the runtime at ``runtime_dir`` once (temp dir + atomic rename + marker).

    Cheap when already built: then it only reinstalls the pip deps if
    ``sandlot/envd/requirements.txt`` changed, and refreshes the app copy. Call it on
    every server start."""
    runtime_dir = Path(runtime_dir)
    progress = _progress(progress)
    if is_built(runtime_dir) and not force:
        reqs = envd_requirements()
        try:
            current = _site_marker(runtime_dir).read_text().strip()
        except OSError:
            current = ""
        if current != _req_hash(reqs):
            progress("envd requirements changed: reinstalling opt/envd/site")
            _install_site(runtime_dir, reqs, pip, progress)
        refresh_envd_app(runtime_dir)
        return runtime_dir
    runtime_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = runtime_dir.parent / f".{runtime_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    try:
        run_mmdebstrap(tmp, variant="extract", include=RUNTIME_PACKAGES, progress=progress)
        for rel in _PRUNE:
            shutil.rmtree(tmp / rel, ignore_errors=True)
        _relativize_symlinks(tmp)
        if not (tmp / "usr/bin" / PY).exists():
            raise RuntimeError(f"{PY} missing from the runtime tree")
        _install_site(tmp, envd_requirements(), pip, progress)
        progress("precompiling .pyc")
        _compile([tmp / "usr/lib" / PY], tmp)
        _copy_app(tmp)
        (tmp / MARKER).write_text(f"envd runtime {PY} built {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        swap_in(tmp, runtime_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"envd runtime built at {runtime_dir} in {time.monotonic() - t0:.1f}s")
    return runtime_dir


APP_PACKAGES = ("envd", "protocol")
"""envd and the wire contract it shares with the host (``sandlot.protocol``): all envd imports."""


def _app_sources() -> list[Path]:
    """The files of envd's app dir: ``sandlot/__init__.py`` and :data:`APP_PACKAGES` without
    caches and tests (what is digested is exactly what is copied)."""
    files: list[Path] = []
    for package in APP_PACKAGES:
        top = _REPO_SANDLOT / package
        files += [p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and "tests" not in p.relative_to(top).parts and p.suffix != ".pyc"]
    return [_REPO_SANDLOT / "__init__.py", *sorted(files)]


@functools.lru_cache(maxsize=1)
def app_digest() -> str:
    """Digest of the envd code this server would put in sandboxes (names its app dir)."""
    digest = hashlib.sha256()
    for path in _app_sources():
        digest.update(str(path.relative_to(_REPO_SANDLOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def app_dir(root: Path | str) -> Path:
    return Path(root) / "opt/envd/apps" / app_digest()


SPAWN_HELPER_SOURCE = _REPO_SANDLOT / "envd" / "spawn_helper.c"
SPAWN_HELPER_NAME = "spawnhelper"
"""Where envd looks for it: next to ``sandlot/envd/spawn.py`` (``spawn.HELPER_NAME``)."""


def build_spawn_helper(dest: Path) -> bool:
    """Compile envd's exec helper (``sandlot/envd/spawn_helper.c``) to ``dest``, static so it
    runs on any sandbox rootfs. False (and a warning) when there is no C compiler: envd then
    spawns by forking itself, correct but ≈ 2 ms slower per command."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.warning("no C compiler: envd's spawn helper is not built (commands spawn by fork)")
        return False
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    done = subprocess.run([cc, "-static", "-O2", "-s", "-Wall", "-o", str(tmp), str(SPAWN_HELPER_SOURCE)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        log.warning("envd's spawn helper did not build (commands spawn by fork): %s", done.stderr[-2000:])
        tmp.unlink(missing_ok=True)
        return False
    os.chmod(tmp, 0o755)
    os.rename(tmp, dest)
    return True


def _copy_app(root: Path) -> None:
    """Add this code's app dir (complete and precompiled, or not at all)."""
    final = app_dir(root)
    if final.is_dir():
        return
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for source in _app_sources():
        copy = tmp / "sandlot" / source.relative_to(_REPO_SANDLOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
    build_spawn_helper(tmp / "sandlot" / "envd" / SPAWN_HELPER_NAME)
    _compile([tmp], root, final)
    try:
        os.rename(tmp, final)
    except OSError:   # another server of the same code won the race
        shutil.rmtree(tmp, ignore_errors=True)


def refresh_envd_app(runtime_dir: Path | str) -> None:
    """Make sure the runtime has this code's app dir (cheap when it has: one stat).

    Call on every server start so code changes apply to new sandboxes; dirs of other
    digests stay for the sandboxes (and servers) that use them."""
    _copy_app(Path(runtime_dir))


def envd_launch(port: int = 49983, *, runtime_dir: Path | str | None = None,
                mount_point: str = MOUNT_POINT, module: str = "sandlot.envd",
                extra_args: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """argv + env that run envd inside a sandbox where the runtime is mounted at
    ``mount_point``. Passing ``runtime_dir`` locates the loader exactly; otherwise the
    ``lib64/ld-linux-x86-64.so.2`` (a relative symlink inside the runtime) is used."""
    ld = loader_path(Path(runtime_dir)) if runtime_dir else "lib64/ld-linux-x86-64.so.2"
    m = mount_point.rstrip("/")
    libpath = ":".join(f"{m}/{d}" for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"))
    argv = [f"{m}/{ld}", "--library-path", libpath, f"{m}/usr/bin/{PY}", "-s", "-m", module,
            *(extra_args or [])]
    env = {
        "PYTHONHOME": f"{m}/usr",
        "PYTHONPATH": f"{m}/opt/envd/apps/{app_digest()}:{m}/opt/envd/site",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "SANDLOT_ENVD_PORT": str(port),
    }
    return argv, env


def python_launch(code: str, *, runtime_dir: Path | str | None = None,
                  mount_point: str = MOUNT_POINT) -> tuple[list[str], dict[str, str]]:
    """Like :func:`envd_launch` but runs ``python -c code`` (used by tests/diagnostics)."""
    argv, env = envd_launch(runtime_dir=runtime_dir, mount_point=mount_point)
    i = argv.index("-m")
    return argv[:i] + ["-c", code], env


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="Build the Sandlot envd runtime")
    p.add_argument("dest", type=Path)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    build_envd_runtime(a.dest, force=a.force, progress=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
