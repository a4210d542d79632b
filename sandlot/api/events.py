"""E2B's lifecycle events (``GET /events/sandboxes[/{sandboxID}]``) and webhooks (``/events/webhooks``).

Events and webhooks belong to the API key's team; another team's webhook is a 404, another
team's sandbox has no events here. Webhook secrets are write-only.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.errors import APIError
from sandlot.api.sandboxes import manager, short_id
from sandlot.orchestrator.lifecycle_events import TYPES, LifecycleEvents, rfc3339
from sandlot.orchestrator.webhooks import TargetPolicy, UnsafeTarget, parse_url
from sandlot.store import events as event_store
from sandlot.store.models import Webhook

router = APIRouter()

MAX_SECRET = 1024


def _events(request: Request) -> LifecycleEvents:
    return manager(request).lifecycle_events


def _checked_types(types: list[str]) -> list[str]:
    unknown = sorted(set(types) - set(TYPES))
    if unknown:
        raise APIError(400, f"unknown event type {unknown[0][:100]!r}; known types: {', '.join(TYPES)}")
    return types


async def _page(request: Request, team_id: str, sandbox_id: str | None, offset: int, limit: int,
                order_asc: bool, types: list[str]) -> list[dict[str, Any]]:
    return await _events(request).page(team_id, sandbox_id=sandbox_id, offset=offset, limit=limit,
                                       order_asc=order_asc, types=_checked_types(types))


Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=100)]
OrderAsc = Annotated[bool, Query(alias="orderAsc")]
Types = Annotated[list[str] | None, Query(max_length=len(TYPES) * 2)]


@router.get("/events/sandboxes", responses=openapi.errors(400))
async def team_events(request: Request, team_id: TeamId, offset: Offset = 0, limit: Limit = 10,
                      order_asc: OrderAsc = False, types: Types = None) -> list[dict[str, Any]]:
    """The team's lifecycle events, newest first unless ``orderAsc``."""
    return await _page(request, team_id, None, offset, limit, order_asc, types or [])


@router.get("/events/sandboxes/{sandbox_id}", responses=openapi.errors(400))
async def sandbox_events(sandbox_id: str, request: Request, team_id: TeamId, offset: Offset = 0,
                         limit: Limit = 10, order_asc: OrderAsc = False,
                         types: Types = None) -> list[dict[str, Any]]:
    """One sandbox's events (also after it was killed); an unknown id has none."""
    return await _page(request, team_id, short_id(sandbox_id)[:64], offset, limit, order_asc, types or [])


# --- webhooks ------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class WebhookCreate(_Body):
    name: StrictStr = Field(min_length=1, max_length=255)
    url: StrictStr = Field(min_length=1, max_length=2048)
    events: list[StrictStr] = Field(min_length=1, max_length=len(TYPES))
    signature_secret: StrictStr = Field(alias="signatureSecret", min_length=1, max_length=MAX_SECRET)
    enabled: StrictBool = True


class WebhookPatch(_Body):
    name: StrictStr | None = Field(None, min_length=1, max_length=255)
    url: StrictStr | None = Field(None, min_length=1, max_length=2048)
    events: list[StrictStr] | None = Field(None, min_length=1, max_length=len(TYPES))
    signature_secret: StrictStr | None = Field(None, alias="signatureSecret", min_length=1, max_length=MAX_SECRET)
    enabled: StrictBool | None = None


def _webhook_json(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "teamId": hook.team_id, "name": hook.name, "createdAt": rfc3339(hook.created_at),
            "url": hook.url, "enabled": hook.enabled, "events": list(hook.events)}


def _checked_url(request: Request, url: str) -> str:
    settings = request.app.state.services.settings
    try:
        TargetPolicy(settings.webhook_allow_private, settings.sandbox_subnet).check_literal(parse_url(url))
    except UnsafeTarget as exc:
        raise APIError(400, str(exc)) from None
    return url


def _checked_events(events: list[str]) -> list[str]:
    return list(dict.fromkeys(_checked_types(events)))


def _webhook_id(webhook_id: str) -> str:
    try:
        return str(uuid.UUID(webhook_id))
    except ValueError:
        raise APIError(400, "webhookID must be a UUID") from None


def _not_found(webhook_id: str) -> APIError:
    return APIError(404, f"Webhook \"{webhook_id[:64]}\" doesn't exist or you don't have access to it")


@router.post("/events/webhooks", status_code=201, responses=openapi.errors(400))
async def create_webhook(body: WebhookCreate, request: Request, team_id: TeamId) -> dict[str, Any]:
    services = request.app.state.services
    hook_id = str(uuid.uuid4())
    hook = Webhook(id=hook_id, team_id=team_id, name=body.name, url=_checked_url(request, body.url),
                   events=_checked_events(body.events), enabled=body.enabled,
                   secret=event_store.seal_secret(_events(request).secret_key, hook_id, body.signature_secret))
    with services.db.session() as session, session.begin():
        limit = services.settings.webhooks_per_team
        if limit > 0 and event_store.count_webhooks(session, team_id) >= limit:
            raise APIError(400, f"a team may register at most {limit} webhooks")
        session.add(hook)
    return _webhook_json(hook)


@router.get("/events/webhooks")
async def list_webhooks(request: Request, team_id: TeamId) -> list[dict[str, Any]]:
    with request.app.state.services.db.session() as session:
        return [_webhook_json(hook) for hook in event_store.webhooks(session, team_id)]


@router.get("/events/webhooks/{webhook_id}", responses=openapi.errors(400, 404))
async def get_webhook(webhook_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    with request.app.state.services.db.session() as session:
        hook = event_store.webhook(session, team_id, _webhook_id(webhook_id))
        if hook is None:
            raise _not_found(webhook_id)
        return _webhook_json(hook)


@router.patch("/events/webhooks/{webhook_id}", responses=openapi.errors(400, 404))
async def update_webhook(webhook_id: str, body: WebhookPatch, request: Request, team_id: TeamId) -> dict[str, Any]:
    url = _checked_url(request, body.url) if body.url is not None else None
    events = _checked_events(body.events) if body.events is not None else None
    with request.app.state.services.db.session() as session, session.begin():
        hook = event_store.webhook(session, team_id, _webhook_id(webhook_id))
        if hook is None:
            raise _not_found(webhook_id)
        if body.name is not None:
            hook.name = body.name
        if url is not None:
            hook.url = url
        if events is not None:
            hook.events = events
        if body.signature_secret is not None:
            hook.secret = event_store.seal_secret(_events(request).secret_key, hook.id, body.signature_secret)
        if body.enabled is not None:
            hook.enabled = body.enabled
        return _webhook_json(hook)


@router.delete("/events/webhooks/{webhook_id}", responses=openapi.errors(400, 404))
async def delete_webhook(webhook_id: str, request: Request, team_id: TeamId) -> Response:
    with request.app.state.services.db.session() as session, session.begin():
        hook = event_store.webhook(session, team_id, _webhook_id(webhook_id))
        if hook is None:
            raise _not_found(webhook_id)
        session.delete(hook)
    return Response(status_code=200)


@router.get("/events/webhooks/{webhook_id}/deliveries", responses=openapi.errors(400, 404))
async def webhook_deliveries(webhook_id: str, request: Request, team_id: TeamId,
                             limit: Annotated[int, Query(ge=1, le=100)] = 25) -> dict[str, Any]:
    """The webhook's recent deliveries, newest first, with their attempts (kept in memory: the
    server's newest few hundred attempts; no cursor, ``nextCursor`` is always null)."""
    with request.app.state.services.db.session() as session:
        if event_store.webhook(session, team_id, _webhook_id(webhook_id)) is None:
            raise _not_found(webhook_id)
    hook_id = _webhook_id(webhook_id)
    grouped: dict[str, dict[str, Any]] = {}
    for outcome in reversed(_events(request).sender.outcomes):
        if outcome.webhook_id != hook_id:
            continue
        entry = grouped.setdefault(outcome.event_id, {"eventId": outcome.event_id, "eventType": outcome.event_type,
                                                      "sandboxId": outcome.sandbox_id, "attempts": []})
        attempt: dict[str, Any] = {"status": "success" if outcome.ok else "failed", "durationMs": outcome.duration_ms,
                                   "deliveryId": outcome.delivery_id}
        if outcome.status is not None:
            attempt["responseHttpStatusCode"] = outcome.status
        if outcome.error_class is not None:
            attempt["errorClass"] = outcome.error_class
        entry["attempts"].insert(0, attempt)
    return {"data": list(grouped.values())[:limit], "nextCursor": None}
