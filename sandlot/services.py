"""The server's long-lived parts, built once by ``sandlot.app.build_services``; its own module so
that what the app starts (e.g. the code-interpreter template build) can name it without
importing the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sandlot.orchestrator.sandboxes import SandboxManager
from sandlot.runtime.base import Runtime
from sandlot.settings import Settings
from sandlot.store.database import Database

if TYPE_CHECKING:
    from sandlot.templates.builder import TemplateBuilder


@dataclass
class Services:
    settings: Settings
    db: Database
    runtime: Runtime
    sandboxes: SandboxManager
    builder: "TemplateBuilder | None" = None  # template builds (issue 6)
    ready: bool = False
