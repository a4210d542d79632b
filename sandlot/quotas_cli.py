"""``sandlot keys quota TEAM``: show or set a team's quotas (overrides of ``SANDLOT_QUOTA_*``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from sandlot import quotas
from sandlot.settings import Settings
from sandlot.store import keys
from sandlot.store import templates as template_store
from sandlot.store.database import Database


def quota_command(
    team: Annotated[str, typer.Argument(help="Team id or name")],
    concurrent_sandboxes: Annotated[Optional[int], typer.Option(help="Sandboxes running at once")] = None,
    snapshots: Annotated[Optional[int], typer.Option(help="Snapshots kept")] = None,
    concurrent_builds: Annotated[Optional[int], typer.Option(help="Template/image builds running at once")] = None,
    upload_bytes: Annotated[Optional[int], typer.Option(help="Bytes of uploaded build files stored")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Drop the team's overrides: the server's settings apply")] = False,
) -> None:
    """Show a team's quotas and slug; the options set overrides (0 = unlimited) that running servers
    apply at the next request."""
    settings = Settings()
    db = Database(settings.effective_database_url)
    db.migrate()
    given = {"concurrent_sandboxes": concurrent_sandboxes, "snapshots": snapshots,
             "concurrent_builds": concurrent_builds, "upload_bytes": upload_bytes}
    if any(v is not None and v < 0 for v in given.values()):
        Console(stderr=True).print("[red]Quotas are 0 (unlimited) or more[/]")
        raise typer.Exit(2)
    with db.session() as session, session.begin():
        row = keys.find_team(session, team)
        if row is None:
            Console(stderr=True).print(f"[red]No team {team!r}[/]")
            raise typer.Exit(1)
        overrides = {} if reset else dict(row.quotas or {})
        overrides.update({k: v for k, v in given.items() if v is not None})
        row.quotas = overrides or None
        session.flush()
        table = Table("quota", "limit", "from")
        for kind in quotas.KINDS:
            value = quotas.team_limit(session, settings, row.id, kind)
            table.add_row(kind, str(value) if value else "unlimited",
                          "team" if kind in overrides else f"SANDLOT_QUOTA_{kind.upper()}")
        Console().print(f"team {row.name} ({row.id}), namespace {template_store.team_slug(row.id)}")
        Console().print(table)
