"""E2B's MCP catalogue names (the SDK's typed ``mcp`` keys) → the npm or PyPI package that
provides that server, and how the SDK's options become its arguments and environment.

E2B runs Docker MCP Catalog images; Sandlot has no Docker, so only servers published as
packages are offered. Versions are pinned so a template build and an on-demand install
start the same server; ``PREINSTALLED`` ones are in the ``mcp-gateway`` template (start is
offline and fast), the others are installed when a gateway first asks for them, which
needs the sandbox's internet access to reach the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    registry: str
    """``npm`` or ``pypi``."""
    package: str
    version: str
    command: str
    """The executable the package installs (npm: its ``bin``; PyPI: its console script)."""
    env: dict[str, str] = field(default_factory=dict)
    """SDK option (camelCase) → environment variable of the server."""
    path_args: str | None = None
    """An SDK option holding a list of paths that become the server's arguments."""
    args: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    """SDK options without which the server cannot start."""
    pins: tuple[str, ...] = ()
    """Requirements installed with a PyPI server: those written for ``mcp`` 1.x get ``mcp<2``
    (2.x dropped the decorator API they use, and their own metadata does not say so)."""

    @property
    def spec(self) -> str:
        """What the package manager installs: ``name@version`` / ``name==version``."""
        return f"{self.package}@{self.version}" if self.registry == "npm" else f"{self.package}=={self.version}"


def _npm(package: str, version: str, command: str, **kw: object) -> Entry:
    return Entry("npm", package, version, command, **kw)  # type: ignore[arg-type]


def _pypi(package: str, version: str, **kw: object) -> Entry:
    return Entry("pypi", package, version, package, **kw)  # type: ignore[arg-type]


CATALOGUE: dict[str, Entry] = {
    "filesystem": _npm("@modelcontextprotocol/server-filesystem", "2026.8.31", "mcp-server-filesystem",
                       path_args="paths", required=("paths",)),
    "memory": _npm("@modelcontextprotocol/server-memory", "2026.8.31", "mcp-server-memory"),
    "sequentialthinking": _npm("@modelcontextprotocol/server-sequential-thinking", "2026.8.31",
                               "mcp-server-sequential-thinking"),
    "time": _pypi("mcp-server-time", "2026.10.19"),
    "fetch": _pypi("mcp-server-fetch", "2026.10.24"),
    "git": _pypi("mcp-server-git", "2026.10.19"),
    # installed on first use
    "sqlite": _pypi("mcp-server-sqlite", "2025.4.25", args=("--db-path", "/var/lib/mcp-gateway/sqlite.db"),
                    pins=("mcp>=1.2,<2",)),
    "duckduckgo": _pypi("duckduckgo-mcp-server", "0.7.0"),
    "markitdown": _pypi("markitdown-mcp", "0.0.1a8"),
    "github": _npm("@modelcontextprotocol/server-github", "2025.4.8", "mcp-server-github",
                   env={"personalAccessToken": "GITHUB_PERSONAL_ACCESS_TOKEN"}, required=("personalAccessToken",)),
    "gitlab": _npm("@modelcontextprotocol/server-gitlab", "2025.4.25", "mcp-server-gitlab",
                   env={"personalAccessToken": "GITLAB_PERSONAL_ACCESS_TOKEN", "url": "GITLAB_API_URL"},
                   required=("personalAccessToken",)),
    "brave": _npm("@modelcontextprotocol/server-brave-search", "0.6.2", "mcp-server-brave-search",
                  env={"apiKey": "BRAVE_API_KEY"}, required=("apiKey",)),
    "slack": _npm("@modelcontextprotocol/server-slack", "2025.4.25", "mcp-server-slack",
                  env={"botToken": "SLACK_BOT_TOKEN", "teamId": "SLACK_TEAM_ID", "channelIds": "SLACK_CHANNEL_IDS"},
                  required=("teamId",)),
    "googleMaps": _npm("@modelcontextprotocol/server-google-maps", "0.6.2", "mcp-server-google-maps",
                       env={"googleMapsApiKey": "GOOGLE_MAPS_API_KEY"}, required=("googleMapsApiKey",)),
    "everart": _npm("@modelcontextprotocol/server-everart", "0.6.2", "mcp-server-everart",
                    env={"apiKey": "EVERART_API_KEY"}, required=("apiKey",)),
    "exa": _npm("exa-mcp-server", "3.4.1", "exa-mcp-server", env={"apiKey": "EXA_API_KEY"}, required=("apiKey",)),
    "tavily": _npm("tavily-mcp", "0.2.22", "tavily-mcp", env={"apiKey": "TAVILY_API_KEY"}, required=("apiKey",)),
    "notion": _npm("@notionhq/notion-mcp-server", "2.5.2", "notion-mcp-server",
                   env={"internalIntegrationToken": "NOTION_TOKEN"}, required=("internalIntegrationToken",)),
    "firecrawl": _npm("firecrawl-mcp", "3.26.0", "firecrawl-mcp",
                      env={"apiKey": "FIRECRAWL_API_KEY", "url": "FIRECRAWL_API_URL"}),
}

PREINSTALLED = ("filesystem", "memory", "sequentialthinking", "time", "fetch", "git")
"""In the template: these start without a registry."""

UNAVAILABLE: dict[str, str] = {
    "puppeteer": "it needs a Chromium build downloaded at install time, which Sandlot cannot fetch",
    "playwright": "it needs browser builds downloaded at install time, which Sandlot cannot fetch",
}
"""Catalogue names that exist as packages but cannot work here, with the reason."""
