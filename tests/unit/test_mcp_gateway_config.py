"""The MCP gateway's config parsing, catalogue and tool routing, without a sandbox.

The real-SDK test is tests/e2e/test_mcp_gateway.py; this covers the shapes the SDK can send
(typed catalogue entries, both spellings of GitHub servers) and the refusals' wording.
"""

from __future__ import annotations

import json
import re
import shlex

import mcp_types as types
import pytest

from sandlot.mcp_gateway import catalogue, config, install
from sandlot.mcp_gateway.server import Routes
from sandlot.mcp_gateway.upstream import Upstream
from sandlot.templates import mcp_gateway as template


def test_catalogue_options_become_args_and_env() -> None:
    plans = config.parse(json.dumps({"filesystem": {"paths": ["/home/user", "/tmp"]}, "time": {},
                                     "brave": {"apiKey": "k-1"}}))
    by_name = {p.name: p for p in plans}
    assert by_name["filesystem"].args == ("/home/user", "/tmp")
    assert by_name["time"].entry is catalogue.CATALOGUE["time"] and by_name["time"].args == ()
    assert by_name["brave"].env == {"BRAVE_API_KEY": "k-1"}


def test_every_catalogue_name_is_one_the_sdk_types() -> None:
    from e2b.sandbox.mcp import McpServer

    sdk_names = set(McpServer.__annotations__)
    assert set(catalogue.CATALOGUE) <= sdk_names
    assert set(catalogue.UNAVAILABLE) <= sdk_names
    assert set(catalogue.PREINSTALLED) <= set(catalogue.CATALOGUE)


@pytest.mark.parametrize("spelling", [{"run_cmd": "npm start", "install_cmd": "npm ci"},
                                      {"runCmd": "npm start", "installCmd": "npm ci"}])
def test_github_servers_in_both_spellings(spelling: dict[str, str]) -> None:
    plan, = config.parse(json.dumps({"github/acme/tools": {**spelling, "envs": {"TOKEN": "t"}}}))
    assert plan.github is not None
    assert (plan.github.url, plan.github.run_cmd, plan.github.install_cmd) == (
        "https://github.com/acme/tools", "npm start", "npm ci")
    assert plan.env == {"TOKEN": "t"} and plan.prefix == "tools"


@pytest.mark.parametrize(("raw", "reason"), [
    ("not json", "not JSON"),
    ("{}", "at least one MCP server"),
    ('{"airtable": {}}', "'airtable' is not available on this Sandlot server: Sandlot starts MCP servers from npm"),
    ('{"puppeteer": {}}', "needs a Chromium build"),
    ('{"filesystem": {}}', "needs the option(s) paths"),
    ('{"github/acme/../x": {"runCmd": "x"}}', "not of the form github/<owner>/<repo>"),
    ('{"github/acme/..": {"runCmd": "x"}}', "not a GitHub repository name"),
    ('{"github/acme/tools": {}}', "needs runCmd"),
    ('{"github/acme/tools": {"runCmd": "x", "envs": {"A B": "1"}}}', "envs must map"),
])
def test_refusals_name_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(reason)):
        config.parse(raw)


def test_tool_names_collide_only_when_two_servers_share_one() -> None:
    def up(name: str, *tools: str) -> Upstream:
        return Upstream(config.Plan(name=name), client=None,  # type: ignore[arg-type]
                        tools=[types.Tool(name=t, input_schema={"type": "object"}) for t in tools])

    routes = Routes([up("a", "add", "echo"), up("b", "echo")])
    assert [t.name for t in routes.tools] == ["add", "a__echo", "b__echo"]
    assert routes.by_name["b__echo"][1] == "echo" and routes.by_name["add"][1] == "add"


def test_template_installs_the_preinstalled_servers_and_the_command() -> None:
    steps = template.steps("/.sandlot/opt/mcp-gateway/0123456789abcdef")
    script = " ".join(str(a) for s in steps for a in s["args"])
    for name in catalogue.PREINSTALLED:
        assert shlex.quote(catalogue.CATALOGUE[name].spec) in script
    assert "PYTHONPATH=/.sandlot/opt/mcp-gateway/0123456789abcdef" in script
    assert install.NPM_PREFIX.as_posix() in script
    assert template.recipe_tag(steps) != template.recipe_tag(template.steps("/.sandlot/opt/mcp-gateway/other"))
