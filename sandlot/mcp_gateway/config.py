"""The ``--config`` JSON the SDK passes (``Sandbox.create(mcp=...)``) → one plan per server.

Keys are E2B catalogue names (``catalogue.py``) or ``github/<owner>/<repo>``; anything the
gateway cannot start is a :class:`ConfigError` whose text the SDK shows after
"Failed to start MCP gateway: ".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sandlot.mcp_gateway.catalogue import CATALOGUE, UNAVAILABLE, Entry

GITHUB_NAME = re.compile(r"^github/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})/([A-Za-z0-9_.-]{1,100})$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_SERVERS = 32


class ConfigError(Exception):
    """The configuration names something the gateway cannot start (the message says why)."""


@dataclass(frozen=True)
class GitHubSource:
    owner: str
    repo: str
    run_cmd: str
    install_cmd: str | None = None

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.repo}"


@dataclass(frozen=True)
class Plan:
    """One MCP server to start: from the catalogue (``entry``) or a GitHub repository."""

    name: str
    entry: Entry | None = None
    github: GitHubSource | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """What this server's tool names get when two servers offer the same name."""
        return re.sub(r"[^A-Za-z0-9_-]", "-", self.github.repo if self.github else self.name)


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ConfigError(f"{what} must be a string")


def catalogue_entry(name: str) -> Entry:
    """The catalogue entry of ``name``, or why there is none."""
    if name in UNAVAILABLE:
        raise ConfigError(f"MCP server '{name}' is not available on this Sandlot server: {UNAVAILABLE[name]}")
    found = CATALOGUE.get(name)
    if found is None:
        raise ConfigError(
            f"MCP server '{name}' is not available on this Sandlot server: Sandlot starts MCP servers from npm "
            f"and PyPI packages and knows none for it (available: {', '.join(sorted(CATALOGUE))}, "
            "or github/<owner>/<repo>)")
    return found


def _catalogue_plan(name: str, options: Any) -> Plan:
    entry = catalogue_entry(name)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"the options of MCP server '{name}' must be an object")
    missing = [o for o in entry.required if options.get(o) in (None, "", [])]
    if missing:
        raise ConfigError(f"MCP server '{name}' needs the option(s) {', '.join(missing)}")
    env = {var: _text(options[opt], f"{name}.{opt}") for opt, var in entry.env.items() if options.get(opt) is not None}
    args = list(entry.args)
    if entry.path_args:
        paths = options.get(entry.path_args) or []
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list):
            raise ConfigError(f"{name}.{entry.path_args} must be a list of paths")
        args += [_text(p, f"{name}.{entry.path_args}") for p in paths]
    return Plan(name=name, entry=entry, args=tuple(args), env=env)


def _github_plan(name: str, match: re.Match[str], options: Any) -> Plan:
    if not isinstance(options, dict):
        raise ConfigError(f"the options of MCP server '{name}' must be an object with runCmd")
    run_cmd = options.get("runCmd", options.get("run_cmd"))
    install_cmd = options.get("installCmd", options.get("install_cmd"))
    envs = options.get("envs") or {}
    if not isinstance(run_cmd, str) or not run_cmd.strip():
        raise ConfigError(f"MCP server '{name}' needs runCmd (the command that starts a stdio MCP server)")
    if install_cmd is not None and not isinstance(install_cmd, str):
        raise ConfigError(f"{name}.installCmd must be a string")
    if not isinstance(envs, dict) or not all(isinstance(k, str) and ENV_NAME.match(k) for k in envs):
        raise ConfigError(f"{name}.envs must map environment variable names to strings")
    owner, repo = match.group(1), match.group(2)
    if repo in (".", "..") or repo.endswith(".git"):
        raise ConfigError(f"'{name}' is not a GitHub repository name")
    env = {k: _text(v, f"{name}.envs.{k}") for k, v in envs.items()}
    return Plan(name=name, github=GitHubSource(owner, repo, run_cmd, install_cmd or None), env=env)


def parse(raw: str) -> list[Plan]:
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"--config is not JSON: {e}") from None
    if not isinstance(config, dict) or not config:
        raise ConfigError("--config must be a JSON object naming at least one MCP server")
    if len(config) > MAX_SERVERS:
        raise ConfigError(f"at most {MAX_SERVERS} MCP servers per gateway")
    plans = []
    for name, options in config.items():
        match = GITHUB_NAME.match(name)
        if match:
            plans.append(_github_plan(name, match, options))
        elif name.startswith("github/"):
            raise ConfigError(f"'{name}' is not of the form github/<owner>/<repo>")
        else:
            plans.append(_catalogue_plan(name, options))
    return plans
