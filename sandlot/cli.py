"""`sandlot` command line: serve, setup, reset, keys, template, status, sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from sandlot.operator_cli import sandbox_app, status
from sandlot.quotas_cli import quota_command
from sandlot.settings import Settings
from sandlot.templates.cli import template_app

if TYPE_CHECKING:
    from sandlot.proxy.tls import TlsFiles
    from sandlot.services import Services

app = typer.Typer(help="Sandlot: self-hosted sandboxes for AI agents that speak the E2B API.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(template_app, name="template")  # issue 6: template build|list|delete|tag
app.add_typer(sandbox_app, name="sandbox")  # issue 18: sandbox list|logs|kill|connect (operator_cli.py)
app.command("status")(status)  # issue 18: health, pools, capacity (operator token)
keys_app.command("quota")(quota_command)  # per-team quotas (sandlot/quotas_cli.py)
console = Console(stderr=True)


Domain = Annotated[Optional[str], typer.Option(help="Sandbox domain ({port}-{id}.{domain})")]
TlsFlag = Annotated[Optional[bool], typer.Option("--tls/--no-tls", help="Serve HTTPS (default: on with --domain)")]
TlsCert = Annotated[Optional[Path], typer.Option(help="Certificate for DOMAIN and *.DOMAIN (PEM)")]
TlsKey = Annotated[Optional[Path], typer.Option(help="Private key of --tls-cert (PEM)")]
LogLevel = Annotated[str, typer.Option(help="debug, info, warning")]
LogFormat = Annotated[Optional[str], typer.Option(
    help="json, console or auto (JSON unless stderr is a terminal); default SANDLOT_LOG_FORMAT")]


def _settings(**overrides: object) -> Settings:
    settings = Settings()
    values = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=values) if values else settings


def _prepare(settings: Settings) -> str | None:
    from sandlot.bootstrap import prepare_images, prepare_store, register_base_template
    from sandlot.orchestrator.requests import ENVD_VERSION
    from sandlot.store.database import Database

    db = Database(settings.effective_database_url)
    try:
        created = prepare_store(settings, db)
        with console.status("Preparing sandbox images…") as status:
            prepare_images(settings, progress=lambda message: status.update(f"[bold]{message}"))
        register_base_template(settings, db, ENVD_VERSION)
        return created
    finally:
        db.dispose()


@app.command()
def setup() -> None:
    """Create the data dir, migrate the store and build the base images (idempotent)."""
    from sandlot.logging_setup import configure

    configure()
    settings = _settings()
    created = _prepare(settings)
    if created and not settings.api_key:
        console.print(f"API key: [bold]{created}[/] (saved to {settings.api_key_file})")
    elif created:
        console.print("Registered the key from SANDLOT_API_KEY for the default team.")
    console.print("[green]Sandlot is set up.[/]")


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port for the API and the sandbox front door")] = None,
    domain: Domain = None,
    tls: TlsFlag = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = None,
) -> None:
    """Run the API and the sandbox front door on one port."""
    import uvicorn

    from sandlot.app import build_services, create_app
    from sandlot.logging_setup import configure
    from sandlot.proxy.relay import Relay
    from sandlot.runtime.base import set_child_subreaper

    settings = _settings(host=host, port=port, domain=domain, tls=tls, tls_cert=tls_cert, tls_key=tls_key,
                         log_format=log_format)
    configure(log_level, settings.log_format)
    tls_files = _tls_files(settings)
    created = _prepare(settings)
    set_child_subreaper()
    url = f"http://{settings.host}:{settings.port}"
    # the key itself only on a terminal: a service's stderr is a log, and keys never go to logs
    shown = created if created and not settings.api_key and console.is_terminal else None
    key = shown or ("$SANDLOT_API_KEY" if settings.api_key else f"$(cat {settings.api_key_file})")
    if shown:
        console.print(f"[bold]New API key[/] (shown once, also saved to {settings.api_key_file}): [bold green]{created}[/]")
    elif created and not settings.api_key:
        console.print(f"New API key saved to {settings.api_key_file} (mode 0600)", highlight=False)
    console.print("Point the E2B SDKs at this server with:")
    if tls_files is not None and settings.domain:
        from sandlot.proxy.tls import trust_instructions

        console.print(f"  export E2B_DOMAIN={settings.domain}\n  export E2B_API_KEY={key}", highlight=False)
        console.print("  (no E2B_API_URL / E2B_SANDBOX_URL: the SDK uses https://api.DOMAIN and https://PORT-ID.DOMAIN)")
        if settings.port != 443:
            console.print(f"[yellow]The SDK connects to port 443 but this server listens on {settings.port}: "
                          "use --port 443 or forward 443 to it.[/]")
        console.print(trust_instructions(tls_files, settings.domain, settings.host), highlight=False)
    else:
        scheme_url = url.replace("http://", "https://") if tls_files else url
        console.print(f"  export E2B_API_URL={scheme_url}\n  export E2B_SANDBOX_URL={scheme_url}\n  export E2B_API_KEY={key}",
                      highlight=False)
        if settings.domain:
            console.print(f"  export E2B_DOMAIN={settings.domain}", highlight=False)
    services = build_services(settings)
    front_door = create_app(services)
    uvicorn.run(
        front_door,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,   # uvicorn's own lines go to the root handler: JSON like ours (logging_setup.py)
        timeout_keep_alive=300,
        http=Relay(front_door).protocol(),   # sandbox traffic as raw bytes, the rest to h11 + ASGI
        ssl_certfile=str(tls_files.cert) if tls_files else None,
        ssl_keyfile=str(tls_files.key) if tls_files else None,
    )


def _cluster_settings(role: str, host: str | None, port: int | None, log_level: str,
                      log_format: str | None) -> Settings:
    """Settings for ``sandlot api`` / ``sandlot node``: PostgreSQL and the node token are required."""
    from sandlot.logging_setup import configure

    settings = _settings(host=host, port=port, log_format=log_format, role=role)
    configure(log_level, settings.log_format)
    if not settings.effective_database_url.startswith("postgresql"):
        console.print(f"[red]sandlot {role} shares its state through PostgreSQL: set "
                      "SANDLOT_DATABASE_URL=postgresql+psycopg://user:password@host:5432/db[/]")
        raise typer.Exit(2)
    if not settings.node_token:
        console.print(f"[red]sandlot {role} needs SANDLOT_NODE_TOKEN, the same secret on every API instance "
                      "and node agent[/]")
        raise typer.Exit(2)
    return settings


@app.command()
def node(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (reachable by the API instances)")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port for the API instances")] = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = None,
) -> None:
    """Run this host's node agent: its sandboxes, runtime, warm pool and builds (docs/scale-out.md)."""
    import uvicorn

    from sandlot.app import build_services, create_app
    from sandlot.proxy.relay import Relay
    from sandlot.runtime.base import set_child_subreaper

    settings = _cluster_settings("node", host, port, log_level, log_format)
    _prepare(settings)
    set_child_subreaper()
    front_door = create_app(build_services(settings))
    console.print(f"Node agent {settings.node_id or ''} on {settings.host}:{settings.port} "
                  f"(advertised as {settings.effective_node_address})", highlight=False)
    uvicorn.run(front_door, host=settings.host, port=settings.port, log_level="warning", log_config=None,
                timeout_keep_alive=300, http=Relay(front_door).protocol())


@app.command("api")
def api_instance(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port for the API and the sandbox front door")] = None,
    domain: Domain = None,
    tls: TlsFlag = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = None,
) -> None:
    """Run a stateless API instance that routes to the node agents (docs/scale-out.md)."""
    import uvicorn

    from sandlot.bootstrap import prepare_store
    from sandlot.cluster.router import Router
    from sandlot.store.database import Database

    settings = _cluster_settings("api", host, port, log_level, log_format)
    updates = {k: v for k, v in dict(domain=domain, tls=tls, tls_cert=tls_cert, tls_key=tls_key).items() if v is not None}
    settings = settings.model_copy(update=updates) if updates else settings
    tls_files = _tls_files(settings)   # the API tier terminates TLS; nodes sit on a private network
    db = Database(settings.effective_database_url)
    prepare_store(settings, db)
    scheme = "https" if tls_files else "http"
    console.print(f"API instance on {scheme}://{settings.host}:{settings.port}", highlight=False)
    uvicorn.run(Router(settings, db), host=settings.host, port=settings.port, log_level="warning",
                log_config=None, timeout_keep_alive=300,
                ssl_certfile=str(tls_files.cert) if tls_files else None,
                ssl_keyfile=str(tls_files.key) if tls_files else None)


def _tls_files(settings: Settings) -> TlsFiles | None:
    """The certificate to serve (operator's or generated), or ``None`` for plain HTTP."""
    from sandlot.proxy.tls import TlsError, generated, operator_files

    if not settings.tls_enabled:
        return None
    try:
        if settings.tls_cert or settings.tls_key:
            if not (settings.tls_cert and settings.tls_key):
                raise TlsError("--tls-cert and --tls-key go together")
            return operator_files(settings.tls_cert, settings.tls_key, settings.domain)
        if not settings.domain:
            raise TlsError("a generated certificate needs --domain (or give --tls-cert and --tls-key)")
        return generated(settings.tls_dir, settings.domain)
    except TlsError as exc:
        console.print(f"[red]TLS: {exc}[/]")
        raise typer.Exit(2) from exc


@app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", help="Don't ask for confirmation")] = False,
) -> None:
    """Kill every sandbox of this instance (running and paused) and remove its host traces.

    For a server that is gone for good, or a test run that was killed: containers, mounts,
    cgroups, network namespaces and the nft table of ``SANDLOT_INSTANCE`` are removed and
    the store forgets its sandboxes. Refuses while a server answers on the configured port."""
    import asyncio

    import httpx

    from sandlot.app import build_services
    from sandlot.logging_setup import configure

    configure("warning")
    settings = _settings()
    try:
        httpx.get(f"http://{settings.host}:{settings.port}/health", timeout=1)
        console.print(f"[red]A server answers on {settings.host}:{settings.port}: stop it first.[/]")
        raise typer.Exit(1)
    except httpx.HTTPError:
        pass
    if not yes and not typer.confirm(f"Kill all sandboxes of instance {settings.instance!r}?"):
        raise typer.Exit(1)
    services = build_services(settings)
    killed = asyncio.run(_reset(services))
    console.print(f"Removed {killed} sandboxes of instance {settings.instance!r}.")


async def _reset(services: Services) -> int:
    from sqlalchemy import delete

    from sandlot.store.models import Sandbox

    runtime = services.runtime
    sandboxes_dir = services.settings.runtime_dir / "sandboxes"
    found = {e.name for e in sandboxes_dir.iterdir()} if sandboxes_dir.is_dir() else set()
    await runtime.start()   # removes sandboxes whose container state is gone
    try:
        ids = {h.sandbox_id for h in await runtime.list()} | set(runtime.paused_ids())
        for sandbox_id in ids:
            await runtime.kill(sandbox_id)
        await _unmount_volumes(services.settings.volumes_dir)
    finally:
        await runtime.close()
    services.db.migrate()
    with services.db.session() as session, session.begin():
        gone = delete(Sandbox)
        if services.settings.role == "node" or services.settings.node_token:   # one store, many nodes
            gone = gone.where(Sandbox.node_id == services.sandboxes.nodes.node_id)
        session.execute(gone)
    return len(found | ids)


async def _unmount_volumes(volumes_dir: Path) -> None:
    """Volumes keep their data (they outlive sandboxes); with no sandbox left, no host mount of one stays."""
    from sandlot.runtime import volume_disk

    for entry in sorted(volumes_dir.iterdir()) if volumes_dir.is_dir() else []:
        if not await volume_disk.unmount(entry):
            console.print(f"[yellow]volume {entry.name} is still in use on the host: not unmounted[/]")


@keys_app.command("create")
def keys_create(
    team: Annotated[Optional[str], typer.Option(help="Team id or name; created if it doesn't exist")] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "cli",
) -> None:
    """Create an API key and print it (shown once)."""
    from sandlot.store import keys
    from sandlot.store.database import Database

    settings = _settings()
    db = Database(settings.effective_database_url)
    db.migrate()
    with db.session() as session, session.begin():
        if team is None:
            owner = keys.get_or_create_default_team(session)
        else:
            owner = keys.find_team(session, team) or keys.create_team(session, team)
        _, key = keys.add_key(session, owner, name)
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (masked) with their teams."""
    from sandlot.store import keys
    from sandlot.store.database import Database

    db = Database(_settings().effective_database_url)
    db.migrate()
    table = Table("id", "key", "name", "team", "created", "last used")
    with db.session() as session:
        for key, team in keys.list_keys(session):
            table.add_row(key.id, key.key_mask, key.name, team.name, str(key.created_at), str(key.last_used_at or "-"))
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id (from `keys list`) or the key itself")]) -> None:
    """Revoke an API key."""
    from sandlot.store import keys
    from sandlot.store.database import Database

    db = Database(_settings().effective_database_url)
    db.migrate()
    with db.session() as session, session.begin():
        if not keys.revoke_key(session, key):
            console.print("[red]No such key[/]")
            raise typer.Exit(1)
    console.print("Revoked.")


if __name__ == "__main__":
    app()
