"""``sandlot template build|list|delete|tag``: the same REST API the SDK uses, with live logs;
``sandlot template gc`` works on the data dir directly (``gc.py``).

Builds go through the unmodified ``e2b`` SDK (``Template.build``), so a directory with a
Dockerfile (parsed client-side by the SDK into steps) or a Python file defining
``template = Template()...`` builds exactly like it would for an SDK user.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sandlot.settings import Settings

if TYPE_CHECKING:  # e2b is imported lazily: the CLI starts without it
    from e2b import LogEntry, TemplateClass

template_app = typer.Typer(help="Build and manage templates (through a running server); collect unused layers.",
                           no_args_is_help=True)
console = Console(stderr=True)
if not console.is_terminal:   # pipes, CI logs and tests: no wrapping of ids and build log lines
    console = Console(stderr=True, width=220)

ApiUrl = Annotated[Optional[str], typer.Option("--api-url", envvar="E2B_API_URL", help="Server URL (default: local server)")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="E2B_API_KEY", help="API key (default: the key file)")]


def _connection(api_url: str | None, api_key: str | None) -> tuple[str, str]:
    settings = Settings()
    url = api_url or f"http://{settings.host}:{settings.port}"
    key = api_key
    if key is None and settings.api_key_file.exists():
        key = settings.api_key_file.read_text().strip()
    if not key:
        console.print("[red]No API key: pass --api-key or set E2B_API_KEY[/red]")
        raise typer.Exit(2)
    os.environ.update({"E2B_API_URL": url, "E2B_API_KEY": key})
    os.environ.setdefault("E2B_SANDBOX_URL", url)
    return url, key


def _load(source: Path) -> TemplateClass:
    """A Template from a Dockerfile directory/file or from a Python file's ``template``."""
    from e2b import Template

    if source.is_dir():
        dockerfile = source / "Dockerfile"
        if not dockerfile.exists():
            console.print(f"[red]{source} has no Dockerfile[/red]")
            raise typer.Exit(2)
        return Template(file_context_path=str(source)).from_dockerfile(str(dockerfile))
    if source.suffix == ".py":
        spec = importlib.util.spec_from_file_location("sandlot_user_template", source)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        template: TemplateClass | None = getattr(module, "template", None)
        if template is None:
            console.print(f"[red]{source} defines no `template` variable[/red]")
            raise typer.Exit(2)
        return template
    return Template(file_context_path=str(source.parent)).from_dockerfile(str(source))


def _api(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60)


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 300:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        console.print(f"[red]{response.status_code}: {message}[/red]")
        raise typer.Exit(1)
    return response


@template_app.command("build")
def build(
    source: Annotated[Path, typer.Argument(help="Directory with a Dockerfile, a Dockerfile, or a Python file")],
    name: Annotated[str, typer.Option("--name", "-n", help="Template name, optionally name:tag")],
    tag: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="Extra tag (repeatable)")] = None,
    cpu: Annotated[Optional[int], typer.Option(help="vCPUs of sandboxes from this template")] = None,
    memory_mb: Annotated[Optional[int], typer.Option(help="Memory (MiB) of sandboxes from this template")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every step")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Build a template: a live view of its steps above the streaming build log."""
    from e2b import Template
    from e2b.exceptions import BuildException

    _connection(api_url, api_key)
    template = _load(source)
    progress = BuildProgress(name)
    with Live(progress.render(), console=console, refresh_per_second=4) as live:
        def on_log(entry: LogEntry) -> None:
            style = {"error": "red", "warn": "yellow", "debug": "dim"}.get(entry.level, "")
            live.console.print(f"[{style}]{entry.message}[/{style}]" if style else entry.message, highlight=False,
                               markup=bool(style), soft_wrap=True)
            progress.heard(entry.message, entry.level)
            live.update(progress.render())

        try:
            info = Template.build(template, name, tags=tag or None, cpu_count=cpu, memory_mb=memory_mb,
                                  skip_cache=no_cache, on_build_logs=on_log)
        except BuildException as exc:
            progress.failed()
            live.update(progress.render())
            console.print(f"[red]Build failed: {exc}[/red]")
            raise typer.Exit(1) from None
        progress.finished()
        live.update(progress.render())
    console.print(f"[green]Built {name}[/green] (template {info.template_id}, build {info.build_id})")


STEP_LINE = re.compile(r"^(?P<cached>CACHED )?\[(?P<n>\d+)/(?P<total>\d+)\] (?P<what>.*?)(?:: done in (?P<s>[\d.]+)s)?$")
"""The builder's step lines (``templates/builder.py``): ``[2/5] RUN …``, ``CACHED [1/5] …``, ``…: done in 1.2s``."""


class BuildProgress:
    """The live view of ``template build``: each step's state and time, from the build's log lines."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.steps: dict[int, list[str]] = {}
        """Step number → [description, state (running/cached/done/failed), seconds]."""
        self.total = 0
        self.state = "building"
        self.last = ""

    def heard(self, message: str, level: str) -> None:
        found = STEP_LINE.match(message.strip())
        if found is not None:
            number, self.total = int(found["n"]), int(found["total"])
            for earlier, step in self.steps.items():   # a new step: the one before it is done
                if earlier < number and step[1] == "running":
                    step[1] = "done"
            state = "cached" if found["cached"] else "done" if found["s"] else "running"
            self.steps[number] = [found["what"], state, found["s"] or ""]
        elif level != "debug" and message.strip():
            self.last = message.strip()

    def finished(self) -> None:
        self.state = "ready"
        for step in self.steps.values():
            if step[1] == "running":
                step[1] = "done"

    def failed(self) -> None:
        self.state = "failed"
        for step in self.steps.values():
            if step[1] == "running":
                step[1] = "failed"

    def render(self) -> Table:
        marks = {"running": "[yellow]…[/]", "cached": "[blue]cached[/]", "done": "[green]✓[/]", "failed": "[red]✗[/]"}
        elapsed = time.monotonic() - self.started
        colour = {"ready": "green", "failed": "red"}.get(self.state, "yellow")
        title = f"[bold]{self.name}[/]: [{colour}]{self.state}[/] ({elapsed:.0f}s"
        title += f", {sum(1 for s in self.steps.values() if s[1] != 'running')}/{self.total} steps)" if self.total else ")"
        table = Table("step", "", "instruction", "time", title=title, title_justify="left", expand=False)
        for number in sorted(self.steps):
            what, state, seconds = self.steps[number]
            table.add_row(f"{number}/{self.total}", marks[state], what[:100], f"{seconds}s" if seconds else "")
        if self.state == "building" and self.last:
            table.caption = self.last[:120]
        return table


@template_app.command("list")
def list_templates(api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Your team's templates and the public ones."""
    url, key = _connection(api_url, api_key)
    with _api(url, key) as api:
        rows = _check(api.get("/templates")).json()
    table = Table("name", "template id", "status", "public", "cpu", "memory", "builds", "spawns")
    for row in rows:
        table.add_row(", ".join(row["names"]) or "-", row["templateID"], row["buildStatus"], str(row["public"]).lower(),
                      str(row["cpuCount"]), f"{row['memoryMB']} MiB", str(row["buildCount"]), str(row["spawnCount"]))
    out = Console()
    if not out.is_terminal:  # pipes and tests: never wrap names
        out = Console(width=220)
    out.print(table)


@template_app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Template name or id")], api_url: ApiUrl = None,
           api_key: ApiKey = None) -> None:
    """Delete a template (refused while sandboxes use it)."""
    url, key = _connection(api_url, api_key)
    with _api(url, key) as api:
        _check(api.delete(f"/templates/{name}"))
    console.print(f"Deleted {name}")


@template_app.command("tag")
def tag(
    target: Annotated[str, typer.Argument(help="name:tag or name:buildID the tags should point at")],
    tags: Annotated[list[str], typer.Argument(help="Tags to assign")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove the tags from TARGET (a name) instead")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Point tags at a build (or remove them)."""
    url, key = _connection(api_url, api_key)
    with _api(url, key) as api:
        if remove:
            _check(api.request("DELETE", "/templates/tags", json={"name": target, "tags": tags}))
            console.print(f"Removed {', '.join(tags)} from {target}")
        else:
            build_id = _check(api.post("/templates/tags", json={"target": target, "tags": tags})).json()["buildID"]
            console.print(f"{', '.join(tags)} → build {build_id}")


@template_app.command("gc")
def gc_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be deleted")] = False,
    min_age: Annotated[float, typer.Option("--min-age", min=0, help="Keep what a build created or used within "
                                           "this many hours (protects builds in progress)")] = 24.0,
    yes: Annotated[bool, typer.Option("--yes", help="Don't ask for confirmation")] = False,
    only: Annotated[Optional[list[str]], typer.Option(
        "--only", help="Consider only this layer key, image digest or path (repeatable)")] = None,
) -> None:
    """Delete cached build layers and pulled images that no template build, sandbox or snapshot
    of any server on this machine uses (works on the data dir; the server may keep running)."""
    from sandlot.templates import gc

    settings = Settings()
    own = gc.normalized_url(settings.effective_database_url) or settings.effective_database_url
    databases: dict[str, Path | None] = {own: None}
    referenced: set[str] = set()
    gone: list[Path] = []
    try:
        databases.update(gc.registered_databases(settings.templates_dir))
        for url, registration in databases.items():  # databases first: a sandbox is created from a build row
            paths = gc.database_references(url)
            if paths is None and registration is not None:
                gone.append(registration)
            referenced |= paths or set()
        referenced |= gc.disk_references(settings.data_dir)
    except gc.ReferencesUnknown as exc:
        console.print(f"[red]Not collecting: cannot tell what is in use ({exc}). If that server is gone for good, "
                      f"remove its file in {settings.templates_dir / gc.DATABASES_DIR}.[/red]", highlight=False)
        raise typer.Exit(1) from None
    entries = gc.plan(settings.templates_dir, referenced, min_age * 3600, only=only)
    out = Console() if Console().is_terminal else Console(width=220)
    if entries:
        table = Table("kind", "entry", "unused for", "size")
        for entry in entries:
            table.add_row("leftover" if entry.tombstone else entry.kind.rstrip("s"), entry.path.name,
                          "-" if entry.tombstone else _duration(entry.age_s), _size(entry.bytes))
        out.print(table)
    total = sum(e.bytes for e in entries)
    out.print(f"{len(entries)} entries, {_size(total)} to reclaim "
              f"({len(databases) - len(gone)} database(s) and all sandboxes/snapshots checked)", highlight=False)
    if dry_run or not entries:
        if dry_run:
            out.print("Dry run: nothing deleted.")
        return
    if not yes and not typer.confirm(f"Delete {len(entries)} entries ({_size(total)})?"):
        raise typer.Exit(1)
    deleted, kept = gc.delete(entries, min_age * 3600)
    for registration in gone:  # SQLite files that no longer exist: nothing can use their builds
        registration.unlink(missing_ok=True)
    for entry in kept:
        out.print(f"skipped {entry.path.name}: used or removed meanwhile", highlight=False)
    out.print(f"Deleted {len(deleted)} entries, reclaimed {_size(sum(e.bytes for e in deleted))}.", highlight=False)


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"
