"""E2B's admin routes for nodes: ``GET /nodes``, ``GET /nodes/{nodeID}``, ``POST /nodes/{nodeID}``.

Operator-only (``X-Admin-Token``, :func:`sandlot.api.operator.require_operator`: 403 when no token
is configured, 401 when it is missing or wrong). Single-box today: the list has this server's one
node and every sandbox of the store is on it. Statuses are E2B's: ``ready``, ``draining``, and
``unhealthy`` for a node whose heartbeat is stale (stored as ``unavailable``). ``POST`` takes E2B's
``NodeStatusChange`` (``{"status": "draining" | "ready", "clusterID"?}``) and answers 204.
"""

from __future__ import annotations

import asyncio
import platform
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, func, or_, select

from sandlot.api.errors import APIError
from sandlot.api.operator import HOLDS_RESOURCES, require_operator
from sandlot.orchestrator.nodes import stale_after_s
from sandlot.services import Services
from sandlot.store import nodes as node_store
from sandlot.store.models import Node, Sandbox

router = APIRouter()

CLUSTER_ID = "00000000-0000-0000-0000-000000000000"
"""E2B's nodes belong to a cluster; a Sandlot deployment is one (its nil UUID, as E2B's default cluster)."""
STARTING = ("creating", "resuming")
WIRE_STATUS = {node_store.UNAVAILABLE: "unhealthy"}
"""Registry status → E2B's ``NodeStatus`` (ready, draining, connecting, unhealthy)."""


class NodeStatusChange(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: str
    clusterID: str | None = None


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


Counts = dict[tuple[str | None, str], tuple[int, int, int]]
"""(node id, state) → (sandboxes, vCPUs, memory MiB)."""


def _held_by(row: Node, services: Services) -> list[str | None]:
    """Node ids whose sandboxes ``row`` holds: rows from before migration 0021 have none, and on a
    single box they are its own."""
    return [row.id] if services.settings.role == "node" else [row.id, None]


def _node_json(row: Node, services: Services, all_counts: Counts) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    status = node_store.effective_status(row, now, stale_after_s(services.settings))
    owners = _held_by(row, services)
    counts: dict[str, tuple[int, int, int]] = {}
    for (node_id, state), (count, cpus, memory) in all_counts.items():
        if node_id in owners:
            c, p, m = counts.get(state, (0, 0, 0))
            counts[state] = (c + count, p + cpus, m + memory)
    held = [counts.get(state, (0, 0, 0)) for state in HOLDS_RESOURCES]
    return {
        "nodeID": row.id,
        "id": row.id,
        "serviceInstanceID": row.id,
        "clusterID": CLUSTER_ID,
        "status": WIRE_STATUS.get(status, status),
        "sandboxCount": sum(count for count, _, _ in held),
        "sandboxStartingCount": sum(counts.get(state, (0, 0, 0))[0] for state in STARTING),
        "version": row.version,
        "commit": "",
        "machineInfo": {"cpuArchitecture": platform.machine(), "cpuFamily": "", "cpuModel": "",
                        "cpuModelName": ""},
        "metrics": {
            "cpuCount": row.cpu_count,
            "allocatedCPU": sum(cpus for _, cpus, _ in held),
            "memoryTotalBytes": row.memory_mb * 1024 * 1024,
            "allocatedMemoryBytes": sum(mem for _, _, mem in held) * 1024 * 1024,
            "disks": [],
        },
        # Sandlot's own fields: where the node is, its capacity, and its heartbeat
        "address": row.address,
        "sandboxSlots": row.sandbox_slots,
        "startedAt": _iso(row.started_at),
        "lastHeartbeat": _iso(row.last_heartbeat),
    }


def _counts(services: Services) -> Counts:
    """Sandboxes by node and state with their vCPUs and memory, in one grouped query."""
    with services.db.session() as session:
        return {(node_id, state): (count, cpus or 0, memory or 0)
                for node_id, state, count, cpus, memory in session.execute(
                    select(Sandbox.node_id, Sandbox.state, func.count(), func.sum(Sandbox.cpu_count),
                           func.sum(Sandbox.memory_mb)).group_by(Sandbox.node_id, Sandbox.state))}


def _listed(services: Services) -> list[dict[str, Any]]:
    counts = _counts(services)
    with services.db.session() as session:
        return [_node_json(row, services, counts) for row in node_store.listed(session)]


def _detail(services: Services, node_id: str) -> dict[str, Any] | None:
    counts = _counts(services)
    with services.db.session() as session:
        row = node_store.get(session, node_id)
        if row is None:
            return None
        owners = _held_by(row, services)
        held: ColumnElement[bool] = Sandbox.node_id.in_([o for o in owners if o is not None])
        if None in owners:
            held = or_(held, Sandbox.node_id.is_(None))
        rows = list(session.scalars(select(Sandbox).where(Sandbox.state.in_(HOLDS_RESOURCES + ("paused",)), held)
                                    .order_by(Sandbox.started_at)))
        data = _node_json(row, services, counts)
    data["sandboxes"] = [{
        "sandboxID": sbx.id, "templateID": sbx.template_id, "alias": sbx.alias, "clientID": row.id,
        "startedAt": _iso(sbx.started_at), "endAt": _iso(sbx.end_at), "cpuCount": sbx.cpu_count,
        "memoryMB": sbx.memory_mb, "diskSizeMB": sbx.disk_mb, "envdVersion": sbx.envd_version,
        "state": "paused" if sbx.state in ("paused", "pausing") else "running", "metadata": sbx.metadata_ or {},
    } for sbx in rows]
    data["cachedBuilds"] = []
    return data


@router.get("/nodes", include_in_schema=False)   # operator routes stay out of the tenant schema
async def list_nodes(request: Request) -> list[dict[str, Any]]:
    """Operator: every node with its status, sandbox count and capacity."""
    require_operator(request)
    return await asyncio.to_thread(_listed, request.app.state.services)


@router.get("/nodes/{node_id}", include_in_schema=False)
async def get_node(node_id: str, request: Request) -> dict[str, Any]:
    """Operator: one node with its sandboxes."""
    require_operator(request)
    data = await asyncio.to_thread(_detail, request.app.state.services, node_id)
    if data is None:
        raise APIError(404, f"Node \"{node_id}\" not found")
    return data


@router.post("/nodes/{node_id}", status_code=204, include_in_schema=False)
async def change_node(node_id: str, body: NodeStatusChange, request: Request) -> Response:
    """Operator: drain a node (no new sandboxes placed on it) or make it ready again."""
    require_operator(request)
    if body.status not in node_store.SETTABLE:
        raise APIError(400, f"Invalid node status \"{body.status}\": set \"draining\" or \"ready\"")
    if body.clusterID not in (None, CLUSTER_ID):
        raise APIError(404, f"Cluster \"{body.clusterID}\" not found (this deployment is cluster {CLUSTER_ID})")
    services: Services = request.app.state.services

    def change() -> bool:
        with services.db.session() as session:
            return node_store.set_status(session, node_id, body.status)

    if not await asyncio.to_thread(change):
        raise APIError(404, f"Node \"{node_id}\" not found")
    services.sandboxes.nodes.noted(node_id, body.status)
    return Response(status_code=204)
