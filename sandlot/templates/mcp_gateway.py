"""The public ``mcp-gateway`` template (``Sandbox.create(mcp=...)``), built by Sandlot's own
pipeline at start-up like ``code-interpreter-v1``.

``base`` + a venv with the official ``mcp`` package + the catalogue's preinstalled MCP
servers (npm and PyPI, pinned: ``sandlot/mcp_gateway/catalogue.py``) + an ``mcp-gateway``
command on ``PATH``. The gateway's code is not copied into the image: it is installed into
the envd runtime (read-only ``/.sandlot`` in every sandbox) under a directory named by its
content hash, and the command runs it from there. So a Sandlot upgrade that changes the
gateway changes only the last step (the command's text), and the servers' layers come from
the layer cache. There is no start command: the SDK runs ``mcp-gateway --config`` itself.

Runs in the control plane; it imports the gateway's catalogue and install commands (plain
Python) but never the gateway server, which needs ``mcp`` and runs only inside sandboxes.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any


from sandlot.mcp_gateway import catalogue
from sandlot.mcp_gateway import install as gateway_install
from sandlot.templates import builtin
from sandlot.templates import steps as build_steps
from sandlot.templates.builder import BuildRequest
from sandlot.templates.runtime_code import install_package

if TYPE_CHECKING:
    from sandlot.services import Services


NAME = "mcp-gateway"
VENV = "/opt/mcp-gateway/venv"
PACKAGES = ["mcp==2.3.0", "uvicorn==0.55.0"]
MEMORY_MB = 1024
"""The gateway, Node servers and a Python server or two: more than the 512 MB default."""
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CODE_DIR = "opt/mcp-gateway"
"""In the envd runtime: ``<digest>/sandlot/mcp_gateway``, nothing else."""
COMMAND = "/usr/local/bin/mcp-gateway"

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "mcp_gateway"
"""``sandlot/mcp_gateway``: what runs inside the sandbox."""


def install_code(runtime_dir: Path) -> str:
    """Install the gateway into the envd runtime; the in-sandbox dir to put on ``PYTHONPATH``."""
    return install_package(runtime_dir, PACKAGE_DIR, CODE_DIR)


def steps(code_dir: str) -> list[dict[str, Any]]:
    script = (f"#!/bin/sh\nPYTHONPATH={code_dir} PYTHONDONTWRITEBYTECODE=1 "
              f'exec {VENV}/bin/python -m sandlot.mcp_gateway "$@"\n')
    preinstalled = [catalogue.CATALOGUE[name] for name in catalogue.PREINSTALLED]
    return [
        {"type": "RUN", "args": [
            f"python3 -m venv {VENV} && PIP_CERT={CA_BUNDLE} {VENV}/bin/pip install --no-cache-dir"
            f" --disable-pip-version-check --progress-bar off {' '.join(PACKAGES)}"
            f" && {VENV}/bin/python -c 'import mcp, uvicorn'", "root"]},
        {"type": "RUN", "args": [gateway_install.shell_command(preinstalled), "root"]},
        {"type": "RUN", "args": [
            f"printf %s {shlex.quote(script)} > {COMMAND} && chmod 755 {COMMAND}"
            " && install -d -m 700 /etc/mcp-gateway && install -d -m 755 /var/log/mcp-gateway"
            f" && {COMMAND} pull {' '.join(catalogue.PREINSTALLED)}", "root"]},
    ]


def recipe_tag(recipe_steps: list[dict[str, Any]]) -> str:
    """Tags the build made from this exact recipe (gateway code included, through the
    command's path), so a Sandlot upgrade that changes it rebuilds (mostly from cache)."""
    return "recipe-" + hashlib.sha256(json.dumps([recipe_steps, MEMORY_MB]).encode()).hexdigest()[:12]


def ensure_built(services: Services) -> str | None:
    """Submit a build of ``mcp-gateway`` unless one from the current recipe is ready or
    running; returns the new build's id. The build runs in the background."""
    settings, builder = services.settings, services.builder
    if not settings.mcp_gateway_template or builder is None:
        return None
    recipe = steps(install_code(settings.envd_runtime_dir))
    return builtin.ensure_built(
        services, name=NAME, tag=recipe_tag(recipe), memory_mb=MEMORY_MB,
        request=lambda team_id: BuildRequest(team_id=team_id, steps=build_steps.parse(recipe), from_template="base"))
