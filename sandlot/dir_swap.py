"""Put a freshly built directory in place of an old one without a window where neither exists.

Used for the cached images (base rootfs, envd runtime and its parts): readers see
the old tree or the new one, and a crash half-way leaves at most a dot-named leftover.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def swap_in(built: Path, dest: Path) -> None:
    """Rename ``built`` to ``dest``, moving an existing ``dest`` aside and deleting it after."""
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.rename(dest, old)
        os.rename(built, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(built, dest)
