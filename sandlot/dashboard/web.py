"""The dashboard app mounted at ``/dashboard``: sign-in/out, security headers, error pages.

Its own small ASGI app (not routes of the API app) so its HTML errors, static files and
headers never mix with the E2B API's JSON contract and OpenAPI schema.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.staticfiles import StaticFiles

from sandlot.dashboard import common, operator, sandbox_pages, team_pages, template_pages, terminal
from sandlot.dashboard.sessions import COOKIE, DashSession, SessionStore
from sandlot.services import Services
from sandlot.store import keys

PREFIX = "/dashboard"
LOGIN_COOKIE = "sandlot_dash_login"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith(f"{PREFIX}/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def _set_session_cookie(response: Response, sid: str, secure: bool) -> None:
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=secure, path=PREFIX)


def create_dashboard(services: Services, health: common.HealthCheck) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.state.sessions = SessionStore()
    app.state.health = health
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=str(common.STATIC), check_dir=False), name="static")

    @app.exception_handler(common.SignInRequired)
    async def _sign_in(request: Request, _exc: Exception) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": f"{PREFIX}/login"})
        return RedirectResponse(f"{PREFIX}/login", status_code=303)

    @app.exception_handler(common.OperatorOnly)
    async def _operator(_request: Request, _exc: Exception) -> Response:
        return RedirectResponse(f"{PREFIX}/operator", status_code=303)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return common.render(request, "error.html", {"status": exc.status_code, "message": exc.detail},
                             status=exc.status_code)

    @app.get("/")
    async def home(request: Request) -> Response:
        dash = common.current(request)
        if dash is None:
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        return RedirectResponse(f"{PREFIX}/operator" if dash.operator else f"{PREFIX}/sandboxes", status_code=303)

    @app.get("/login")
    async def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(24)   # login CSRF: a double-submit pair (field + strict cookie)
        response = common.render(request, "login.html", {"login_token": token, "error": None})
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path=PREFIX,
                            secure=request.url.scheme == "https", max_age=3600)
        return response

    @app.post("/login")
    async def login(request: Request, api_key: str = Form(..., max_length=256),
                    login_token: str = Form("", max_length=64)) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected.encode(), login_token.encode()):
            raise HTTPException(403, "Missing or wrong CSRF token: reload the sign-in page and try again")
        presented = api_key.strip()
        admin = services.settings.admin_token
        dash: DashSession | None = None
        if admin and hmac.compare_digest(presented.encode(), admin.encode()):
            dash = DashSession(team_id=None, key_id=None, operator=True)
        else:
            with services.db.session() as session, session.begin():
                team_id = keys.team_for_key(session, presented)
                row = keys.key_row(session, presented) if team_id else None
            if team_id and row is not None:
                dash = DashSession(team_id=team_id, key_id=row.id)
        if dash is None:
            return common.render(request, "login.html", {"login_token": login_token,
                                                         "error": "Unknown API key"}, status=401)
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        _set_session_cookie(response, app.state.sessions.create(dash), request.url.scheme == "https")
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        dash = common.current(request)
        if dash is not None:
            await common.check_csrf(request, dash)
            app.state.sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    app.include_router(sandbox_pages.router)
    app.include_router(terminal.router)
    app.include_router(template_pages.router)
    app.include_router(team_pages.router)
    app.include_router(operator.router)
    return app
