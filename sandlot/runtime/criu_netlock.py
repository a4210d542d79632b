"""CRIU's network lock, left in a paused sandbox's netns by a memory pause.

``runc checkpoint`` (without ``--leave-running``) ends with the netns locked: an iptables
``CRIU`` chain, jumped to from ``INPUT`` and ``OUTPUT``, that drops every packet not marked by
CRIU itself, so no peer sees a reset for connections that are dumped, not closed. The netns is
Sandlot's (it outlives the container), so the lock stays until ``criu restore`` lifts it. A
resume that cold-boots such a sandbox instead (``memory: false``) must lift it itself, or the
new envd is unreachable; when that boot fails the lock is put back, since the memory image it
guards is kept and its restore expects it.

The commands run the host's iptables in the host-made netns (its path comes from the runtime's
own slot table, never from the tenant); the tenant cannot touch that netns's netfilter.
"""

from __future__ import annotations

import asyncio

CHAIN = "CRIU"
MARK = "0xc114"   # CRIU's SOCCR_MARK: its own packets pass the lock
TOOLS = ("iptables", "ip6tables")


async def _run(netns_path: str, tool: str, *args: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={netns_path}", tool, "-w", "-t", "filter", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await proc.wait()


async def locked(netns_path: str) -> bool:
    """Whether CRIU's lock chain exists in the netns (IPv4 table)."""
    return await _run(netns_path, "iptables", "-S", CHAIN) == 0


async def lift(netns_path: str) -> None:
    """Remove CRIU's lock (idempotent: a missing rule or chain is no error)."""
    for tool in TOOLS:
        for args in (("-D", "INPUT", "-j", CHAIN), ("-D", "OUTPUT", "-j", CHAIN), ("-F", CHAIN), ("-X", CHAIN)):
            await _run(netns_path, tool, *args)
    if await locked(netns_path):
        raise RuntimeError(f"CRIU's network lock in {netns_path} could not be removed")


async def put_back(netns_path: str) -> None:
    """Lock the netns again as a dump leaves it (when it is not locked already)."""
    if await locked(netns_path):
        return
    for tool in TOOLS:
        for args in (("-N", CHAIN), ("-A", CHAIN, "-m", "mark", "--mark", MARK, "-j", "ACCEPT"),
                     ("-A", CHAIN, "-j", "DROP"), ("-I", "INPUT", "-j", CHAIN), ("-I", "OUTPUT", "-j", CHAIN)):
            await _run(netns_path, tool, *args)
