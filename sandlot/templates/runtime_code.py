"""Installing an in-sandbox Python package (the code interpreter's server, the MCP gateway)
into the envd runtime, which every sandbox mounts read-only at ``/.sandlot``.

A package lands under ``<code_dir>/<digest>/sandlot/<name>``, named by its sources' content,
so servers from different checkouts sharing a data dir (tests) never swap each other's code,
and a change of the code changes the in-sandbox path and so the template recipe that names it.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import shutil
from pathlib import Path

MOUNT_POINT = "/.sandlot"


def install_package(runtime_dir: Path, package_dir: Path, code_dir: str) -> str:
    """Copy ``package_dir``'s modules into the envd runtime (once per content) and return the
    in-sandbox dir to put on ``PYTHONPATH`` (it holds ``sandlot/<name>`` and nothing else, so it
    shadows nothing of a template's venv)."""
    sources = sorted(package_dir.glob("*.py"))
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    rel = f"{code_dir}/{digest.hexdigest()[:16]}"
    final = runtime_dir / rel
    if not (final / "sandlot" / package_dir.name / "__main__.py").is_file():
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        package = tmp / "sandlot" / package_dir.name
        package.mkdir(parents=True)
        (tmp / "sandlot" / "__init__.py").write_text("")
        for source in sources:
            shutil.copyfile(source, package / source.name)
        compileall.compile_dir(str(tmp), ddir=f"{MOUNT_POINT}/{rel}", quiet=2)  # the mount is read-only
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the sandbox's user
        try:
            os.rename(tmp, final)
        except OSError:  # another server installed the same content first
            shutil.rmtree(tmp, ignore_errors=True)
    return f"{MOUNT_POINT}/{rel}"
