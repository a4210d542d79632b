"""What every dashboard page shares: the signed-in session, CSRF checks, rendering, ownership.

A page's team comes only from its server-side session; every sandbox is looked up through
``SandboxManager.owned`` (another team's id is a 404, exactly as in the API).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from sandlot.dashboard.sessions import COOKIE, DashSession, SessionStore
from sandlot.orchestrator.errors import SandboxNotFound
from sandlot.services import Services
from sandlot.store.models import ApiKey, Sandbox

HERE = Path(__file__).parent
STATIC = HERE / "static"
VENDOR = STATIC / "vendor"
VENDOR_FILES = ("htmx.min.js", "xterm.js", "xterm.css", "addon-fit.js", "chart.umd.min.js")
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"

templates = Jinja2Templates(directory=str(HERE / "templates"))

HealthCheck = Callable[[], list[str]]


class SignInRequired(Exception):
    """No (or an ended) session: pages redirect to the sign-in form."""


class OperatorOnly(Exception):
    """A team session asked for the operator page."""


def services(request: HTTPConnection) -> Services:
    found: Services = request.app.state.services
    return found


def store(request: HTTPConnection) -> SessionStore:
    found: SessionStore = request.app.state.sessions
    return found


def missing_assets() -> list[str]:
    return [name for name in VENDOR_FILES if not (VENDOR / name).is_file()]


def current(request: HTTPConnection) -> DashSession | None:
    """The request's live session; a team session whose API key was revoked has ended."""
    sid = request.cookies.get(COOKIE)
    found = store(request).get(sid)
    if found is None or found.operator:
        return found
    db = services(request).db
    with db.session() as session:
        if found.key_id is None or session.get(ApiKey, found.key_id) is None:
            store(request).drop(sid)
            return None
    return found


def team_session(request: Request) -> DashSession:
    """Dependency: a signed-in team (an operator session has no team's pages)."""
    found = current(request)
    if found is None:
        raise SignInRequired()
    if found.team_id is None:
        raise OperatorOnly()
    return found


def operator_session(request: Request) -> DashSession:
    found = current(request)
    if found is None:
        raise SignInRequired()
    if not found.operator:
        raise HTTPException(403, "The operator page needs the operator token (SANDLOT_ADMIN_TOKEN) at sign-in")
    return found


async def check_csrf(request: Request, dash: DashSession) -> None:
    """Every state-changing request carries the session's CSRF token (form field or header)."""
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not dash.csrf_ok(presented):
        raise HTTPException(403, "Missing or wrong CSRF token: reload the page and try again")


def team_id(dash: DashSession) -> str:
    assert dash.team_id is not None
    return dash.team_id


def owned(request: Request, dash: DashSession, sandbox_id: str) -> Sandbox:
    """The team's sandbox, else a 404 (missing and another team's look the same)."""
    try:
        return services(request).sandboxes.owned(team_id(dash), sandbox_id.split("-", 1)[0][:64])
    except SandboxNotFound:
        raise HTTPException(404, f"Sandbox '{sandbox_id[:64]}' not found") from None


def flash(dash: DashSession, message: str, error: bool = False) -> None:
    dash.flash = (message, error)


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    dash = current(request)
    base = {"dash": dash, "csrf": dash.csrf if dash else "", "missing_assets": missing_assets(),
            "flash": dash.flash if dash else None, "now": datetime.now(timezone.utc)}
    if dash is not None and not request.headers.get("hx-request"):
        dash.flash = None   # shown once, on the next full page
    return templates.TemplateResponse(request, name, base | context, status_code=status)


def human_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 5400:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


templates.env.filters["age"] = lambda at: human_seconds((datetime.now(timezone.utc) - at).total_seconds())
templates.env.filters["left"] = lambda at: human_seconds((at - datetime.now(timezone.utc)).total_seconds())
templates.env.filters["bytes"] = human_bytes
templates.env.filters["iso"] = lambda at: at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "—"
