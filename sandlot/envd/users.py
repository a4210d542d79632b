"""User lookup straight from the rootfs' /etc/passwd and /etc/group.

Parsed by hand instead of via ``pwd``/``grp`` so the answer never depends on the runtime's NSS
configuration, only on the files of the sandbox's own rootfs. Every command and file request
resolves a user, so the parsed files are kept until a ``stat`` shows they changed (a tenant
may edit them at any time: ``useradd`` in the sandbox applies to the next request).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

PASSWD_PATH = "/etc/passwd"
GROUP_PATH = "/etc/group"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[int, ...]


class UnknownUser(LookupError):
    pass


_Identity = tuple[int, int, int, int, int] | None
_RACY_NS = 100_000_000
"""A file changed less than this long ago is not cached: file timestamps are coarse (a clock
tick), so a second write inside the same tick could leave size and times unchanged (git's
"racily clean" index entries)."""
_parsed: dict[str, tuple[_Identity, list[list[str]]]] = {}


def _identity(path: str) -> _Identity:
    """What changes whenever the file's content may have: any write or rename bumps ctime."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_lines(path: str) -> list[list[str]]:
    ident = _identity(path)
    cached = _parsed.get(path)
    if cached is not None and cached[0] == ident:
        return cached[1]
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        lines = []
    if ident is not None and time.time_ns() - max(ident[3], ident[4]) > _RACY_NS:
        _parsed[path] = (ident, lines)
    else:
        _parsed.pop(path, None)
    return lines


def lookup(name: str) -> User:
    """Resolve a user by name; raises UnknownUser when absent from /etc/passwd."""
    for fields in _read_lines(PASSWD_PATH):
        if len(fields) >= 7 and fields[0] == name:
            uid, gid = int(fields[2]), int(fields[3])
            home = fields[5] or "/"
            shell = fields[6] or "/bin/sh"
            groups = {gid}
            for g in _read_lines(GROUP_PATH):
                if len(g) >= 4 and name in g[3].split(","):
                    groups.add(int(g[2]))
            return User(name, uid, gid, home, shell, tuple(sorted(groups)))
    raise UnknownUser(name)


def _name_by_id(path: str, ident: int) -> str:
    for fields in _read_lines(path):
        if len(fields) >= 3 and fields[2] == str(ident):
            return fields[0]
    return str(ident)


def owner_name(uid: int) -> str:
    return _name_by_id(PASSWD_PATH, uid)


def group_name(gid: int) -> str:
    return _name_by_id(GROUP_PATH, gid)


def chown_to(path: str, user: User) -> None:
    """Give a path to the user (no-op when not running as root, e.g. in dev)."""
    if os.geteuid() == 0:
        os.lchown(path, user.uid, user.gid)
