"""User file metadata kept as ``user.e2b.<key>`` extended attributes (envd >= 0.6.2).

Stored on the inode so it survives renames and follows the file, like E2B's envd.
"""

from __future__ import annotations

import errno
import os

PREFIX = "user.e2b."
HEADER_PREFIX = "x-metadata-"
# Symlinks cannot carry user.* xattrs; tmpfs before 6.6 and some FUSE mounts lack them.
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENODATA}


def read(path: str) -> dict[str, str]:
    """The metadata of ``path`` (not following symlinks); {} if none or unsupported."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, str] = {}
    for name in names:
        if name.startswith(PREFIX):
            try:
                out[name[len(PREFIX):]] = os.getxattr(path, name, follow_symlinks=False).decode("utf-8", "replace")
            except OSError:
                continue
    return out


def replace(path: str, metadata: dict[str, str]) -> None:
    """Make ``metadata`` the complete ``user.e2b.*`` set of ``path`` (keys lowercased)."""
    wanted = {k.lower(): v for k, v in metadata.items()}
    try:
        existing = [n for n in os.listxattr(path) if n.startswith(PREFIX)]
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
        existing = []
    for name in existing:
        if name[len(PREFIX):] not in wanted:
            try:
                os.removexattr(path, name)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
    for key, value in wanted.items():
        os.setxattr(path, PREFIX + key, value.encode("utf-8"))


def from_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """``X-Metadata-<key>: value`` request headers → {key: value}; None when there are none."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX):
            out[name[len(HEADER_PREFIX):]] = raw_value.decode("latin-1")
    return out or None
