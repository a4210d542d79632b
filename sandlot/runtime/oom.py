"""OOM-killer tiers: sandbox user processes die first, then a sandbox's envd, the server last.

Lowering an ``oom_score_adj`` needs CAP_SYS_RESOURCE, which some hosts do not grant the
server (nested sandboxes); raising never does. So the tiers are built upwards from the
server's own score: envd (the container init) sits :data:`INIT_ABOVE_SERVER` above it, and
envd starts every user process at 1000 (``sandlot/envd/spawn.py``). Inside a sandbox's
memory cgroup that makes the user's processes the only candidates before envd; host-wide the
server and its in-process database are the last choice."""
from __future__ import annotations

from pathlib import Path

INIT_ABOVE_SERVER = 100
INIT_MAX = 900   # below the users' 1000, so envd never ties with its own children


def own_score_adj() -> int:
    try:
        return int(Path("/proc/self/oom_score_adj").read_text())
    except (OSError, ValueError):
        return 0


def init_score_adj(requested: int) -> int:
    """The container init's score: never below the server's own plus a margin."""
    return min(INIT_MAX, max(requested, own_score_adj() + INIT_ABOVE_SERVER))


SERVER_SCORE_ADJ = -500


def protect_server() -> int:
    """Lower the server's own score where the host allows it (CAP_SYS_RESOURCE): it, its
    database and what it starts later (lxcfs, log drainers) go after every sandbox. Returns
    the score in force; unchanged where lowering is refused."""
    try:
        if own_score_adj() > SERVER_SCORE_ADJ:
            Path("/proc/self/oom_score_adj").write_text(str(SERVER_SCORE_ADJ))
    except OSError:
        pass
    return own_score_adj()
