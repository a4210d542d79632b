"""Which node takes a new sandbox: free memory first, then template locality, never a full,
draining or silent node.

One grouped query over the live sandbox rows gives every node's load; the score is the node's
free memory fraction plus half its free vCPU fraction (vCPUs are overcommitted ``CPU_OVERCOMMIT``
times, as idle agents' sandboxes are), plus a small bonus (about half a default sandbox) when the
node already runs sandboxes of the requested template (its layers are cached there, its warm pool
may hold one).
The node stays the authority on admission: a node that refuses (drained meanwhile, full) answers
503 and the router tries the next candidate, so two API instances choosing at once can't overfill
a node — no lock is held across the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from sandlot.cluster.directory import NodeView
from sandlot.store import nodes as node_store
from sandlot.store.models import Sandbox

ACTIVE_STATES = ("creating", "running", "pausing", "resuming", "killing")
"""Rows that hold a node's memory and address slots (a paused sandbox holds only disk)."""
LOCALITY_BONUS = 0.01
CPU_OVERCOMMIT = 8
CPU_WEIGHT = 0.5


@dataclass(frozen=True)
class Load:
    sandboxes: int
    memory_mb: int
    of_template: int
    cpus: int = 0


def loads(session: Session, template: str | None) -> dict[str, Load]:
    """Active sandboxes per node, their memory, and how many run ``template`` (id or alias)."""
    same = or_(Sandbox.template_id == template, Sandbox.alias == template) if template else None
    of_template = func.sum(case((same, 1), else_=0)) if same is not None else func.sum(0)
    query = (select(Sandbox.node_id, func.count(), func.coalesce(func.sum(Sandbox.memory_mb), 0), of_template,
                    func.coalesce(func.sum(Sandbox.cpu_count), 0))
             .where(Sandbox.state.in_(ACTIVE_STATES), Sandbox.node_id.is_not(None))
             .group_by(Sandbox.node_id))
    return {node_id: Load(count, int(memory or 0), int(local or 0), int(cpus or 0))
            for node_id, count, memory, local, cpus in session.execute(query)}


def rank(nodes: list[NodeView], load: dict[str, Load]) -> list[NodeView]:
    """Ready nodes with a free slot, best first (ties: fewer sandboxes, then node id)."""
    scored: list[tuple[float, int, str, NodeView]] = []
    for node in nodes:
        if node.status != node_store.READY:
            continue
        used = load.get(node.id, Load(0, 0, 0))
        if node.sandbox_slots and used.sandboxes >= node.sandbox_slots:
            continue
        free = 1.0 - used.memory_mb / node.memory_mb if node.memory_mb else 0.0
        vcpus = node.cpu_count * CPU_OVERCOMMIT
        free_cpu = max(0.0, 1.0 - used.cpus / vcpus) if vcpus else 0.0
        score = free + CPU_WEIGHT * free_cpu + (LOCALITY_BONUS if used.of_template else 0.0)
        scored.append((-score, used.sandboxes, node.id, node))
    return [node for *_, node in sorted(scored, key=lambda item: item[:3])]
