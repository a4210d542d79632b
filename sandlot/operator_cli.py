"""``sandlot status`` and ``sandlot sandbox list|logs|kill|connect``: operator tools over a running server's API.

Both talk HTTP to the server (never to its database or containers), so they work from any
machine that reaches it and show exactly what the API answers:

- ``status`` reads ``GET /admin/status`` with the operator token (``--admin-token`` or
  ``SANDLOT_ADMIN_TOKEN``, the server's own setting): health, sandboxes by state, builds,
  warm pools and host capacity. Without a token it shows ``/health`` and says what is missing.
- ``sandbox …`` act for one team, with its API key (``--api-key``/``E2B_API_KEY``, default:
  the data dir's key file), through the E2B API: list (``GET /v2/sandboxes``), logs
  (``GET /sandboxes/{id}/logs``, ``--follow`` polls), kill (``DELETE``), and connect: an
  interactive terminal on envd's PTY through the front door (the ``e2b`` SDK's ``pty``, as
  ``e2b sandbox connect`` does), resized with the local terminal.

The server URL is ``--api-url``/``E2B_API_URL``, default the local ``SANDLOT_HOST:SANDLOT_PORT``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from sandlot.settings import Settings

sandbox_app = typer.Typer(help="List, follow, kill and open a terminal in your team's sandboxes (via the API).",
                          no_args_is_help=True)
console = Console(stderr=True)

ApiUrl = Annotated[Optional[str], typer.Option("--api-url", envvar="E2B_API_URL",
                                               help="Server URL (default: the local server)")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="E2B_API_KEY",
                                               help="Your team's API key (default: the data dir's key file)")]
AdminToken = Annotated[Optional[str], typer.Option("--admin-token", envvar="SANDLOT_ADMIN_TOKEN",
                                                   help="The server's operator token (SANDLOT_ADMIN_TOKEN)")]


def _out() -> Console:
    """stdout; pipes and tests get a wide console so ids are never wrapped."""
    out = Console()
    return out if out.is_terminal else Console(width=220)


def _url(api_url: str | None) -> str:
    if api_url:
        return api_url.rstrip("/")
    settings = Settings()
    scheme = "https" if settings.tls_enabled else "http"
    return f"{scheme}://{settings.host}:{settings.port}"


def _key(api_key: str | None) -> str:
    if api_key:
        return api_key
    key_file = Settings().api_key_file
    try:
        return key_file.read_text().strip()
    except OSError:
        console.print("[red]No API key: pass --api-key or set E2B_API_KEY[/red]")
        raise typer.Exit(2) from None


def _fail(response: httpx.Response) -> None:
    if response.status_code < 300:
        return
    try:
        message = response.json().get("message", response.text)
    except ValueError:
        message = response.text
    console.print(f"[red]{response.status_code}: {message}[/red]", highlight=False)
    raise typer.Exit(1)


def _get(url: str, path: str, headers: dict[str, str], **params: Any) -> Any:
    try:
        response = httpx.get(url + path, headers=headers, params=params or None, timeout=30)
    except httpx.HTTPError as exc:
        console.print(f"[red]Cannot reach the server at {url}: {exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    _fail(response)
    return response.json()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# --- status -------------------------------------------------------------------------------------


def status(api_url: ApiUrl = None, admin_token: AdminToken = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON")] = False) -> None:
    """The server's health, sandboxes by state, builds, warm pools and capacity (operator token)."""
    url = _url(api_url)
    if not admin_token:
        health = _get(url, "/health", {})
        console.print(f"Server {url}: [bold]{health.get('status', health)}[/bold]", highlight=False)
        for problem in health.get("problems", []):
            console.print(f"  [yellow]• {problem}[/yellow]", highlight=False)
        console.print("[red]Pools and capacity need the operator token: set SANDLOT_ADMIN_TOKEN (the server's) "
                      "or pass --admin-token[/red]")
        raise typer.Exit(2)
    data = _get(url, "/admin/status", {"X-Admin-Token": admin_token})
    out = _out()
    if as_json:
        out.print_json(json.dumps(data))
        return
    colour = {"ok": "green", "degraded": "yellow"}.get(data["status"], "red")
    out.print(f"Server {url} (instance {data['instance']}): [bold {colour}]{data['status']}[/]", highlight=False)
    for problem in data["problems"]:
        out.print(f"  [yellow]• {problem}[/yellow]", highlight=False)
    states = Table("state", "sandboxes", title="Sandboxes", title_justify="left")
    for state, count in data["sandboxes"].items():
        states.add_row(state, str(count))
    committed = data["committed"]
    states.add_row("[dim]committed[/]", f"{committed['vcpus']} vCPU, {committed['memoryMB']} MiB")
    out.print(states)
    builds = Table("status", "builds", title="Template builds", title_justify="left")
    for name, count in data["builds"].items():
        builds.add_row(name, str(count))
    out.print(builds)
    pools = Table("template", "build", "ready", "booting", title=f"Warm pools (target {data['warmPoolSize']} each)",
                  title_justify="left")
    for pool in data["warmPools"]:
        pools.add_row(pool["templateID"], pool["buildID"], str(pool["ready"]), str(pool["booting"]))
    out.print(pools)
    cap = data["capacity"]
    table = Table("resource", "capacity", title=f"Node {cap['node']}", title_justify="left")
    load = ", ".join(f"{v:.2f}" for v in cap["load"]) or "-"
    table.add_row("CPUs", f"{cap['cpus']} (load {load})")
    table.add_row("memory", f"{_size(cap['memoryAvailableBytes'])} available of {_size(cap['memoryTotalBytes'])}")
    table.add_row("data-dir disk", f"{_size(cap['diskFreeBytes'])} free of {_size(cap['diskTotalBytes'])}")
    table.add_row("sandbox slots", f"{cap['sandboxSlotsUsed']} used of {cap['sandboxSlots']}")
    out.print(table)


# --- sandbox ------------------------------------------------------------------------------------


def _ago(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    seconds = (datetime.now(timezone.utc) - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    text = f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"
    return f"in {text}" if future else f"{text} ago"


@sandbox_app.command("list")
def list_sandboxes(
    state: Annotated[str, typer.Option(help="Comma-separated states")] = "running,paused",
    metadata: Annotated[Optional[list[str]], typer.Option("--metadata", "-m", help="key=value filter (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Your team's sandboxes."""
    url, key = _url(api_url), _key(api_key)
    params: dict[str, Any] = {"state": state, "limit": 100}
    if metadata:
        from urllib.parse import urlencode

        params["metadata"] = urlencode(dict(item.split("=", 1) for item in metadata if "=" in item))
    rows: list[dict[str, Any]] = []
    headers = {"X-API-Key": key}
    while True:
        try:
            response = httpx.get(url + "/v2/sandboxes", headers=headers, params=params, timeout=30)
        except httpx.HTTPError as exc:
            console.print(f"[red]Cannot reach the server at {url}: {exc}[/red]", highlight=False)
            raise typer.Exit(1) from None
        _fail(response)
        rows += response.json()
        token = response.headers.get("x-next-token")
        if not token:
            break
        params["nextToken"] = token
    out = _out()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("sandbox id", "template", "state", "started", "ends", "cpu", "memory", "metadata")
    for row in rows:
        meta = ", ".join(f"{k}={v}" for k, v in (row.get("metadata") or {}).items())
        table.add_row(row["sandboxID"], row.get("alias") or row.get("templateID", "-"), row.get("state", "-"),
                      _ago(row.get("startedAt")), _ago(row.get("endAt")), str(row.get("cpuCount", "-")),
                      f"{row.get('memoryMB', '-')} MiB", meta or "-")
    out.print(table)
    out.print(f"{len(rows)} sandbox(es)", highlight=False)


def _print_entries(out: Console, entries: list[dict[str, Any]]) -> None:
    styles = {"error": "red", "warn": "yellow", "warning": "yellow", "debug": "dim"}
    for entry in entries:
        level = entry.get("level", "info")
        fields = " ".join(f"{k}={v}" for k, v in (entry.get("fields") or {}).items())
        style = styles.get(level, "")
        line = f"{entry.get('timestamp', '')} {level:<5} {entry.get('message', '')} {fields}".rstrip()
        out.print(f"[{style}]{line}[/{style}]" if style else line, highlight=False, markup=bool(style),
                  soft_wrap=True)


@sandbox_app.command("logs")
def logs(
    sandbox_id: Annotated[str, typer.Argument(help="Sandbox id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the sandbox is gone")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A sandbox's lifecycle log (created, paused, resumed, start command output…)."""
    url, key = _url(api_url), _key(api_key)
    headers = {"X-API-Key": key}
    out = _out()
    seen = 0
    while True:
        try:
            response = httpx.get(f"{url}/sandboxes/{sandbox_id}/logs", headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            console.print(f"[red]Cannot reach the server at {url}: {exc}[/red]", highlight=False)
            raise typer.Exit(1) from None
        if follow and seen and response.status_code == 404:
            console.print("The sandbox is gone.")
            return
        _fail(response)
        entries = response.json().get("logEntries", [])
        _print_entries(out, entries[seen:])
        seen = len(entries)
        if not follow:
            return
        time.sleep(1)


@sandbox_app.command("kill")
def kill(
    sandbox_ids: Annotated[list[str], typer.Argument(help="Sandbox ids")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Kill sandboxes (running or paused)."""
    url, key = _url(api_url), _key(api_key)
    failed = False
    for sandbox_id in sandbox_ids:
        try:
            response = httpx.delete(f"{url}/sandboxes/{sandbox_id}", headers={"X-API-Key": key}, timeout=60)
        except httpx.HTTPError as exc:
            console.print(f"[red]Cannot reach the server at {url}: {exc}[/red]", highlight=False)
            raise typer.Exit(1) from None
        if response.status_code == 404:
            console.print(f"[red]{sandbox_id}: not found[/red]", highlight=False)
            failed = True
            continue
        _fail(response)
        _out().print(f"Killed {sandbox_id}", highlight=False)
    if failed:
        raise typer.Exit(1)


@sandbox_app.command("connect")
def connect(
    sandbox_id: Annotated[str, typer.Argument(help="Sandbox id")],
    user: Annotated[Optional[str], typer.Option(help="User of the shell (default: the template's)")] = None,
    cwd: Annotated[Optional[str], typer.Option(help="Working directory")] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """An interactive terminal in a sandbox (envd's PTY, through the front door). Exit the shell to leave."""
    from sandlot.terminal import run_terminal

    url, key = _url(api_url), _key(api_key)
    sys.exit(run_terminal(url, key, sandbox_id, user=user, cwd=cwd))

