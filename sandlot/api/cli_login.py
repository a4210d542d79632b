"""``e2b auth login`` against Sandlot: the browser page the unmodified CLI opens, and OAuth's
token and revocation endpoints it calls afterwards.

The CLI listens on ``http://localhost:PORT`` and opens ``{E2B_DOCS_BASE}/api/cli?next=…``
(``E2B_DOCS_BASE`` defaults to ``https://{E2B_DOMAIN}/docs``). Sandlot has no accounts: the
page asks for one of the team's API keys, then sends the browser back to the CLI with a new
access token (``sk_e2b_…``) and refresh token; the CLI calls ``GET /teams`` with it and saves
the team's new API key. ``next`` is tenant-shaped: only ``http://localhost:PORT`` or
``http://127.0.0.1:PORT`` is accepted, and the redirect is rebuilt from the parsed port, so
the tokens can only ever go to a listener on the user's own machine.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from sandlot.store import keys
from sandlot.store.models import Team

router = APIRouter(include_in_schema=False)

CLIENT_ID = "sandlot-cli"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "form-action 'self' http://localhost:* http://127.0.0.1:*",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


FORM_BYTES = 16 * 1024
"""These forms hold a key, a URL and a few tokens: a bigger (or unsized) body is refused unread."""


async def _small_form(request: Request) -> FormData | None:
    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > FORM_BYTES:
        return None
    return await request.form(max_files=0, max_fields=16)


def loopback_target(next_url: str) -> tuple[str, int] | None:
    """(host, port) of a ``next`` that names the CLI's local listener, else ``None``."""
    try:
        parts = urlsplit(next_url)
        port = parts.port
    except ValueError:
        return None
    if (parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS or port is None or parts.username
            or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment):
        return None
    return parts.hostname, port


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                "<style>body{font-family:sans-serif;max-width:36em;margin:4em auto}input{width:100%}</style>"
                f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return HTMLResponse(document, status_code=status, headers=HEADERS)


def _form(next_url: str, problem: str | None = None, status: int = 200) -> HTMLResponse:
    note = f"<p><strong>{html.escape(problem)}</strong></p>" if problem else ""
    return _page("Log in the E2B CLI to Sandlot", (
        f"{note}<p>Paste one of your team's API keys (<code>e2b_…</code>). The CLI gets an access "
        "token for that team and saves a new API key of its own.</p>"
        "<form method='post'><input type='password' name='apiKey' autocomplete='off' autofocus>"
        f"<input type='hidden' name='next' value='{html.escape(next_url, quote=True)}'>"
        "<p><button type='submit'>Log in</button></p></form>"), status)


@router.get("/docs/api/cli")
async def login_page(request: Request) -> HTMLResponse:
    params = request.query_params
    if params.get("state") == "success":
        return _page("Logged in", f"<p>The CLI is logged in as {html.escape(params.get('email', '')[:200])}. "
                                  "You can close this page.</p>")
    if params.get("state") == "error":
        return _page("Login failed", f"<p>{html.escape(params.get('error', 'unknown error')[:500])}</p>", 400)
    next_url = params.get("next", "")
    if loopback_target(next_url) is None:
        return _page("Invalid login link", "<p><code>next</code> must be the CLI's own "
                                           "<code>http://localhost:PORT</code> address.</p>", 400)
    return _form(next_url)


@router.post("/docs/api/cli", response_model=None)
async def login(request: Request) -> Response:
    form = await _small_form(request)
    if form is None:
        return _page("Request too large", f"<p>A login form takes at most {FORM_BYTES} bytes.</p>", 413)
    next_url, api_key = str(form.get("next") or ""), str(form.get("apiKey") or "").strip()
    target = loopback_target(next_url)
    if target is None:
        return _page("Invalid login link", "<p><code>next</code> must be the CLI's own "
                                           "<code>http://localhost:PORT</code> address.</p>", 400)
    with request.app.state.services.db.session() as session, session.begin():
        team_id = keys.team_for_key(session, api_key) if api_key else None
        team = session.get(Team, team_id) if team_id else None
        if team is None:
            return _form(next_url, "That is not a valid API key.", 401)
        _, token, refresh = keys.add_access_token(session, team.id, "CLI login", refreshable=True)
        email = f"{team.name}@sandlot"
    base = str(request.base_url).rstrip("/")
    query = urlencode({"email": email, "accessToken": token, "refreshToken": refresh,
                       "tokenEndpoint": f"{base}/oauth/token", "revokeEndpoint": f"{base}/oauth/revoke",
                       "clientId": CLIENT_ID})
    host, port = target
    return RedirectResponse(f"http://{host}:{port}/?{query}", status_code=303, headers=HEADERS)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={"Cache-Control": "no-store"})


@router.post("/oauth/token", response_model=None)
async def token(request: Request) -> JSONResponse:
    """OAuth 2 refresh grant (RFC 6749 §6): a new access token and refresh token; the old go."""
    form = await _small_form(request)
    if form is None:
        return _oauth_error("invalid_request", f"send a form of at most {FORM_BYTES} bytes", 413)
    if form.get("grant_type") != "refresh_token":
        return _oauth_error("unsupported_grant_type", "only grant_type=refresh_token is supported")
    refresh = str(form.get("refresh_token") or "")
    with request.app.state.services.db.session() as session, session.begin():
        found = keys.refresh_access_token(session, refresh) if refresh else None
        if found is None:
            return _oauth_error("invalid_grant", "the refresh token is invalid or was revoked")
        _, access, new_refresh = found
    body: dict[str, Any] = {"access_token": access, "refresh_token": new_refresh, "token_type": "Bearer"}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/oauth/revoke", response_model=None)
async def revoke(request: Request) -> Response:
    """RFC 7009: 200 whether or not the token existed (``e2b auth logout``)."""
    form = await _small_form(request)
    if form is None:
        return _oauth_error("invalid_request", f"send a form of at most {FORM_BYTES} bytes", 413)
    value = str(form.get("token") or "")
    if value:
        with request.app.state.services.db.session() as session, session.begin():
            keys.revoke_access_token(session, value)
    return Response(status_code=200)
