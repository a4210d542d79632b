"""Signing keys kept in the data dir, so what they signed survives a server restart."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def data_dir_key(data_dir: Path, name: str) -> bytes:
    """The 32-byte key in ``data_dir/name``, created once (0600). Concurrent first starts
    agree on one key: each writes its own temp file and links it in, and a link never
    overwrites."""
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return bytes.fromhex(path.read_text().strip())
