"""User lookup straight from the rootfs' /etc/passwd and /etc/group.

Parsed by hand instead of via ``pwd``/``grp`` so the answer never depends on the runtime's NSS
configuration, only on the files of the sandbox's own rootfs.
"""

from __future__ import annotations

import os
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


def _read_lines(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


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
