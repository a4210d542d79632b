"""cgroup v1 helpers: find, read and remove a sandbox's cgroup dirs (runc creates them)."""
from __future__ import annotations

import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "sandlot"


def cgroups_path(sandbox_id: str, parent: str = PARENT) -> str:
    """The OCI ``linux.cgroupsPath`` for a sandbox."""
    return f"/{parent}/{sandbox_id}"


def hierarchies() -> list[Path]:
    out = []
    try:
        for e in os.scandir(CGROUP_ROOT):
            if e.is_dir(follow_symlinks=False):
                out.append(Path(e.path))
    except FileNotFoundError:
        pass
    return out


def sandbox_dirs(sandbox_id: str, parent: str = PARENT) -> list[Path]:
    """Existing cgroup dirs of a sandbox over all hierarchies (v1 and the v2 'unified')."""
    return [h / parent / sandbox_id for h in hierarchies() if (h / parent / sandbox_id).is_dir()]


def controller_dir(controller: str, sandbox_id: str, parent: str = PARENT) -> Path:
    return CGROUP_ROOT / controller / parent / sandbox_id


def read(controller: str, sandbox_id: str, name: str, parent: str = PARENT) -> str | None:
    try:
        return (controller_dir(controller, sandbox_id, parent) / name).read_text().strip()
    except OSError:
        return None


def write(controller: str, sandbox_id: str, name: str, value: str, parent: str = PARENT) -> bool:
    """Set a control file of a sandbox's cgroup; ``False`` when it is gone."""
    try:
        (controller_dir(controller, sandbox_id, parent) / name).write_text(value)
    except OSError:
        return False
    return True


def _rmdir_tree(d: Path) -> None:
    # children first (cgroup dirs can only be rmdir'ed, never unlinked)
    for dirpath, dirnames, _ in os.walk(d, topdown=False):
        for sub in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, sub))
            except FileNotFoundError:
                pass
    os.rmdir(d)


def remove(sandbox_id: str, *, parent: str = PARENT, timeout: float = 2.0) -> list[Path]:
    """Remove every cgroup dir of a sandbox (killing stragglers). Returns the dirs that
    could not be removed."""
    left = []
    deadline = time.monotonic() + timeout
    for d in sandbox_dirs(sandbox_id, parent):
        while True:
            try:
                _rmdir_tree(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                # EBUSY: tasks still exiting; kill what is left, retry briefly
                _kill_tasks(d)
                if time.monotonic() > deadline:
                    left.append(d)
                    break
                time.sleep(0.01)
    return left


def _kill_tasks(d: Path) -> None:
    for dirpath, _, files in os.walk(d):
        if "cgroup.procs" in files:
            try:
                for pid in Path(dirpath, "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass


def stale_ids(parent: str = PARENT) -> set[str]:
    """Sandbox ids that have a cgroup dir under ``/<parent>`` in any hierarchy."""
    ids: set[str] = set()
    for h in hierarchies():
        try:
            ids.update(e.name for e in os.scandir(h / parent) if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            pass
    return ids


def remove_parent_if_empty(parent: str = PARENT) -> None:
    """rmdir ``/<parent>`` in every hierarchy when no sandbox cgroup is left in it."""
    for h in hierarchies():
        try:
            os.rmdir(h / parent)
        except OSError:
            pass
