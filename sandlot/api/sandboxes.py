"""Sandbox routes (E2B ``/sandboxes`` and ``/v2/sandboxes``): validation, store calls, shapes."""

from __future__ import annotations

import urllib.parse
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from sandlot.api import limits, openapi
from sandlot.api.auth import TeamId
from sandlot.api.errors import APIError, not_found_sandbox
from sandlot.egress.config import ConfigError, parse_iam, proxy_info, stored_iam
from sandlot.orchestrator.requests import CloneRequest, CreateRequest
from sandlot.orchestrator.sandboxes import SandboxManager
from sandlot.services import Services
from sandlot.settings import Settings
from sandlot.proxy.traffic import private_traffic_token
from sandlot.store import sandboxes as sandbox_store
from sandlot.store import snapshots as snapshot_store
from sandlot.store import templates as template_store
from sandlot.store.models import Sandbox

router = APIRouter()

CLIENT_ID = "6532622b"
"""E2B's infra always answers this constant ``clientID``."""


# --- request bodies ---------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class NetworkConfig(_Body):
    allow_public_traffic: bool | None = Field(None, alias="allowPublicTraffic")
    allow_out: limits.NetworkList | None = Field(None, alias="allowOut")
    deny_out: limits.NetworkList | None = Field(None, alias="denyOut")
    mask_request_host: str | None = Field(None, alias="maskRequestHost", max_length=limits.NAME)
    dns_servers: limits.DnsServers | None = Field(None, alias="dnsServers")
    https_ports: list[int] | None = Field(None, alias="httpsPorts", max_length=64)
    egress_proxy: limits.JsonObject | None = Field(None, alias="egressProxy")
    rules: limits.JsonObject | None = None

    def stored(self) -> dict[str, Any]:
        """The camelCase form kept in the store and applied by the orchestrator."""
        return self.model_dump(by_alias=True, exclude_none=True)


class NetworkUpdate(_Body):
    """``PUT /sandboxes/{id}/network``: replaces the egress rules; omitted fields are cleared."""

    allow_out: limits.NetworkList | None = Field(None, alias="allowOut")
    deny_out: limits.NetworkList | None = Field(None, alias="denyOut")
    dns_servers: limits.DnsServers | None = Field(None, alias="dnsServers")
    egress_proxy: limits.JsonObject | None = Field(None, alias="egressProxy")
    rules: limits.JsonObject | None = None
    allow_internet_access: StrictBool | None = None
    iam: limits.JsonObject | None = None
    """Not E2B's: its update carries no ``iam``; here one with tokens is refused (tokens are
    defined at create), never silently ignored."""


def _check_https_ports(https_ports: list[int] | None, envd_port: int) -> None:
    """E2B's ``httpsPorts``: real ports, and never envd's (which the front door reaches itself)."""
    for port in https_ports or []:
        if not 1 <= port <= 65535:
            raise APIError(400, f"network.httpsPorts: {port} is not a TCP port")
        if port == envd_port:
            raise APIError(400, f"network.httpsPorts: port {port} is envd's and cannot be HTTPS")


def with_iam(network: dict[str, Any] | None, iam: dict[str, Any] | None) -> dict[str, Any] | None:
    """E2B's ``iam`` kept with the sandbox's network configuration (so it follows the sandbox
    through pause/resume, and ``PUT /network`` cannot replace it); 400 when invalid."""
    try:
        stored = stored_iam(parse_iam(iam))
    except ConfigError as exc:
        raise APIError(400, str(exc)) from exc
    if stored is None:
        return network
    return {**(network or {}), "iam": stored}


class AutoResume(_Body):
    enabled: bool = False


class NewSandbox(_Body):
    template_id: str = Field(alias="templateID", min_length=1, max_length=255)
    timeout: int | None = None
    auto_pause: StrictBool | None = Field(None, alias="autoPause")
    auto_pause_memory: StrictBool | None = Field(None, alias="autoPauseMemory")
    auto_resume: AutoResume | None = Field(None, alias="autoResume")
    allow_internet_access: StrictBool | None = None
    network: NetworkConfig | None = None
    metadata: limits.Metadata | None = None
    env_vars: limits.EnvVars | None = Field(None, alias="envVars")
    mcp: limits.JsonObject | None = None
    iam: limits.JsonObject | None = None
    volume_mounts: limits.JsonObjects | None = Field(None, alias="volumeMounts")
    secure: bool | None = None


class ConnectBody(_Body):
    timeout: int | None = None
    memory: StrictBool | None = None   # False: E2B's on_resume="reboot", a cold boot from disk


class TimeoutBody(_Body):
    timeout: int


class RefreshBody(_Body):
    duration: int | None = None


# --- helpers ------------------------------------------------------------------------------------


def manager(request: Request) -> SandboxManager:
    services: Services = request.app.state.services
    return services.sandboxes


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def checked_timeout(request: Request, timeout: int | None, *, allow_zero: bool = False) -> int:
    settings: Settings = request.app.state.services.settings
    if timeout is None:
        return settings.default_timeout_s
    if timeout < 0 or (timeout == 0 and not allow_zero):
        raise APIError(400, f"Invalid timeout {timeout}: it must be a positive number of seconds")
    if timeout > settings.max_lifetime_s:
        raise APIError(400, f"Invalid timeout {timeout}: the maximum is {settings.max_lifetime_s} seconds")
    return timeout


def sandbox_json(row: Sandbox, domain: str | None) -> dict[str, Any]:
    return {
        "templateID": row.template_id,
        "sandboxID": row.id,
        "clientID": CLIENT_ID,
        "envdVersion": row.envd_version,
        "alias": row.alias,
        "envdAccessToken": row.envd_access_token,
        "trafficAccessToken": private_traffic_token(row.id, row.envd_access_token, row.network),
        "domain": domain,
    }


def _listed_json(row: Sandbox) -> dict[str, Any]:
    data: dict[str, Any] = {
        "templateID": row.template_id,
        "sandboxID": row.id,
        "clientID": CLIENT_ID,
        "startedAt": _iso(row.started_at),
        "endAt": _iso(row.end_at),
        "cpuCount": row.cpu_count,
        "memoryMB": row.memory_mb,
        "diskSizeMB": row.disk_mb,
        "state": "paused" if row.state in ("paused", "pausing") else "running",
        "envdVersion": row.envd_version,
        "metadata": row.metadata_ or {},
    }
    if row.alias:
        data["alias"] = row.alias
    if row.volume_mounts:   # E2B echoes the create's {name, path} pairs
        data["volumeMounts"] = [{"name": m["name"], "path": m["path"]} for m in row.volume_mounts]
    if row.envd_unresponsive_at_pause and row.state in ("paused", "pausing"):   # E2B omits it otherwise
        data["envdUnresponsiveAtPause"] = True
    return data


NETWORK_FIELDS = ("allowPublicTraffic", "allowOut", "denyOut", "maskRequestHost", "dnsServers", "rules",
                  "httpsPorts")
"""The parts of E2B's ``SandboxNetworkConfig`` a Sandlot sandbox has, shown as stored (rules keep
their ``${e2b.secrets.…}`` placeholders); ``egressProxy`` is shown without its password and CA."""


def network_json(row: Sandbox) -> dict[str, Any]:
    """The sandbox's network configuration as E2B's ``SandboxDetail.network`` reports it: what
    the create (or the last ``PUT /network``) set; ``allow_internet_access: false`` is, as in
    E2B, a ``denyOut`` of ``0.0.0.0/0``."""
    stored = row.network or {}
    network = {key: stored[key] for key in NETWORK_FIELDS if stored.get(key) is not None}
    if isinstance(stored.get("egressProxy"), dict):
        network["egressProxy"] = proxy_info(stored["egressProxy"])
    if row.allow_internet_access is False and "0.0.0.0/0" not in network.get("denyOut", []):
        network["denyOut"] = [*network.get("denyOut", []), "0.0.0.0/0"]
    return network


def _detail_json(row: Sandbox, domain: str | None) -> dict[str, Any]:
    data = _listed_json(row)
    data.update(
        {
            "envdAccessToken": row.envd_access_token,
            "allowInternetAccess": row.allow_internet_access,
            "domain": domain,
            "lifecycle": {"autoResume": bool(row.auto_resume), "onTimeout": "pause" if row.auto_pause else "kill"},
            "pauseMode": "full" if row.pause_memory else "filesystem",
            "network": network_json(row),
        }
    )
    if row.state in ("paused", "pausing"):
        data["domain"] = None
    return data


def _reject_unsupported(body: NewSandbox, envd_port: int) -> None:
    """Features of later milestones fail loudly instead of being silently ignored."""
    auto_resume = bool(body.auto_resume and body.auto_resume.enabled)
    if auto_resume and not body.auto_pause:
        raise APIError(400, "autoResume is only valid together with autoPause")
    if auto_resume and body.auto_pause_memory is False:
        raise APIError(400, "autoResume cannot be combined with a filesystem-only autoPause (autoPauseMemory=false)")
    if body.network is not None:
        _check_https_ports(body.network.https_ports, envd_port)


def parse_metadata_filter(raw: str | None) -> dict[str, str]:
    """E2B's ``metadata`` query: url-encoded ``k=v&k2=v2`` (keys and values quoted once more)."""
    if not raw:
        return {}
    result: dict[str, str] = {}
    for part in urllib.parse.unquote_plus(raw).split("&"):
        pieces = part.split("=")
        if len(pieces) != 2:
            raise APIError(400, f"Invalid metadata filter {part!r}: expected key=value")
        result[urllib.parse.unquote_plus(pieces[0])] = urllib.parse.unquote_plus(pieces[1])
    return result


# --- routes -------------------------------------------------------------------------------------


@router.post("/sandboxes", status_code=201, responses=openapi.errors(404, 409, 429, 503, 507))
@router.post("/v2/sandboxes", status_code=201, responses=openapi.errors(404, 409, 429, 503, 507))
async def create_sandbox(body: NewSandbox, request: Request, team_id: TeamId) -> dict[str, Any]:
    cache = request.app.state.idempotency
    fingerprint = cache.fingerprint(body.model_dump(mode="json"))
    key = request.headers.get("idempotency-key")
    answer: dict[str, Any] = await cache.run(team_id, key, fingerprint, lambda: _create_sandbox(body, request, team_id))
    return answer


async def _create_sandbox(body: NewSandbox, request: Request, team_id: str) -> dict[str, Any]:
    timeout = checked_timeout(request, body.timeout)
    _reject_unsupported(body, request.app.state.services.settings.envd_port)
    network = with_iam(body.network.stored() if body.network is not None else None, body.iam)
    manager(request).egress_policy(body.allow_internet_access, network)
    services = request.app.state.services
    with services.db.session() as session:   # a snapshot name/id starts a sandbox from it (issue 4)
        snap = snapshot_store.resolve(session, team_id, body.template_id)
    if snap is not None and body.volume_mounts:
        raise APIError(400, "invalid mounts: a sandbox started from a snapshot mounts the snapshot's volumes")
    if snap is not None:
        row = await manager(request).start_from(
            snap, CloneRequest(team_id, timeout, body.metadata, body.env_vars, body.allow_internet_access, network))
        return sandbox_json(row, services.settings.domain)
    with services.db.session() as session:
        template = template_store.resolve(session, team_id, body.template_id)
        if template is None:
            raise APIError(404, f"Template '{body.template_id}' not found")
        found = template_store.resolve_build(session, team_id, body.template_id)  # name:tag → tagged build
        if found is None and ":" in body.template_id:
            raise APIError(404, f"Template '{body.template_id}' not found (unknown tag)")
        build = found[1] if found else None
        if build is None:
            pending = next((b for b in template_store.builds(session, template.id)
                            if b.status in ("waiting", "building")), None)
            if pending is not None:  # e.g. code-interpreter-v1 right after the first start
                raise APIError(400, f"Template '{body.template_id}' is still being built (build {pending.id} is "
                                    f"{pending.status}); try again when the build is ready")
            raise APIError(400, f"Template '{body.template_id}' has no finished build")
        names = template_store.aliases(session, template.id)
    mounts = manager(request).volumes.resolve_mounts(team_id, body.volume_mounts) if body.volume_mounts else None
    plain = template_store.split_tag(body.template_id)[0]
    alias = plain if plain in names else (names[0] if names else None)
    row = await manager(request).create(
        CreateRequest(
            team_id=team_id,
            template=template,
            build=build,
            alias=alias,
            timeout_s=timeout,
            metadata=body.metadata or {},
            env_vars=body.env_vars or {},
            allow_internet_access=body.allow_internet_access,
            network=network,
            auto_pause=bool(body.auto_pause),
            auto_resume=bool(body.auto_pause and body.auto_resume and body.auto_resume.enabled),
            pause_memory=body.auto_pause_memory is not False,
            volume_mounts=mounts,
        )
    )
    return sandbox_json(row, services.settings.domain)


@router.get("/sandboxes")
async def list_sandboxes_v1(request: Request, team_id: TeamId, metadata: str | None = None) -> list[dict[str, Any]]:
    filters = parse_metadata_filter(metadata)
    with request.app.state.services.db.session() as session:
        rows, _ = sandbox_store.page(
            session, team_id, states=["running"], metadata=filters, ascending=False, limit=10_000, after=None
        )
    return [_listed_json(r) for r in rows]


@router.get("/v2/sandboxes")
async def list_sandboxes(
    request: Request,
    response: Response,
    team_id: TeamId,
    metadata: str | None = None,
    state: str | None = None,
    order: str = "desc",
    limit: int = Query(100, ge=1, le=100),
    next_token: str | None = Query(None, alias="nextToken"),
    started_after: openapi.DateTime | None = Query(None, alias="startedAfter"),
    template: str | None = None,
) -> list[dict[str, Any]]:
    filters = parse_metadata_filter(metadata)
    states = [s.strip() for s in state.split(",") if s.strip()] if state else ["running", "paused"]
    if not set(states) <= {"running", "paused"}:
        raise APIError(400, f"Invalid state filter {state!r}: use running, paused or both")
    if order not in ("asc", "desc"):
        raise APIError(400, f"Invalid order {order!r}: use asc or desc")
    cursor = None
    if next_token:
        try:
            cursor = sandbox_store.PageCursor.decode(next_token)
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, "Invalid nextToken") from exc
    with request.app.state.services.db.session() as session:
        template_ids = None
        if template:
            if ":" in template:
                raise APIError(400, "The template filter must not carry a tag")
            found = template_store.resolve(session, team_id, template)
            template_ids = [found.id] if found else []
        rows, following = sandbox_store.page(
            session,
            team_id,
            states=states,
            metadata=filters,
            ascending=order == "asc",
            limit=limit,
            after=cursor,
            started_after=started_after,
            template_ids=template_ids,
        )
    if following is not None:
        response.headers["X-Next-Token"] = following.encode()
    return [_listed_json(r) for r in rows]


@router.get("/sandboxes/{sandbox_id}", responses=openapi.errors(404))
async def get_sandbox(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    services = request.app.state.services
    with services.db.session() as session:
        row = sandbox_store.get_for_team(session, team_id, short_id(sandbox_id))
    if row is None:
        raise not_found_sandbox(sandbox_id)
    return _detail_json(row, services.settings.domain)


@router.delete("/sandboxes/{sandbox_id}", status_code=204, responses=openapi.errors(404))
async def kill_sandbox(sandbox_id: str, request: Request, team_id: TeamId) -> Response:
    if not await manager(request).kill(team_id, short_id(sandbox_id)):
        raise not_found_sandbox(sandbox_id)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout", status_code=204, responses=openapi.errors(404, 409))
async def set_timeout(sandbox_id: str, body: TimeoutBody, request: Request, team_id: TeamId) -> Response:
    timeout = checked_timeout(request, body.timeout, allow_zero=True)
    await manager(request).set_timeout(team_id, short_id(sandbox_id), timeout)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/refreshes", status_code=204, responses=openapi.errors(404, 409))
async def refresh(sandbox_id: str, request: Request, team_id: TeamId, body: RefreshBody | None = None) -> Response:
    duration = max(15, body.duration if body and body.duration is not None else 15)
    timeout = checked_timeout(request, duration)
    await manager(request).keep_alive(team_id, short_id(sandbox_id), timeout)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/connect", responses=openapi.CONNECT)
@router.post("/v2/sandboxes/{sandbox_id}/connect", responses=openapi.CONNECT)
async def connect(
    sandbox_id: str, request: Request, response: Response, team_id: TeamId, body: ConnectBody | None = None
) -> dict[str, Any]:
    timeout = checked_timeout(request, body.timeout if body else None)
    memory = body is None or body.memory is not False
    # 201 when a paused sandbox was resumed, 200 when it was running
    row, resumed = await manager(request).resume(team_id, short_id(sandbox_id), timeout, memory=memory)
    response.status_code = 201 if resumed else 200
    return sandbox_json(row, request.app.state.services.settings.domain)


@router.put("/sandboxes/{sandbox_id}/network", status_code=204, responses=openapi.errors(404, 409))
async def update_network(sandbox_id: str, body: NetworkUpdate, request: Request, team_id: TeamId) -> Response:
    if (body.iam or {}).get("tokens"):
        raise APIError(400, "iam tokens are defined when the sandbox is created; PUT /network cannot add them")
    egress = {"allowOut": body.allow_out, "denyOut": body.deny_out, "dnsServers": body.dns_servers,
              "rules": body.rules, "egressProxy": body.egress_proxy}
    await manager(request).update_network(team_id, short_id(sandbox_id), body.allow_internet_access, egress)
    return Response(status_code=204)


def _not_yet(feature: str) -> APIError:
    return APIError(501, f"{feature} is not implemented by this Sandlot server yet")


def _require_sandbox(request: Request, team_id: str, sandbox_id: str) -> Sandbox:
    with request.app.state.services.db.session() as session:
        row = sandbox_store.get_for_team(session, team_id, short_id(sandbox_id))
    if row is None:
        raise not_found_sandbox(sandbox_id)
    return row


def short_id(sandbox_id: str) -> str:
    """Accept the legacy ``{sandboxID}-{clientID}`` form, as E2B's infra does."""
    return sandbox_id.split("-", 1)[0]
