"""Fixtures: one real server per test session (e2e and security tests share it), SDK environment pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandlot import ids
from tests.e2e.server import Server, reset_all, sdk_pointed_at


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that wait for a template the session server builds in the background from its start
    (``template_ready``: code-interpreter-v1, ~8 min of apt, pip and Deno on a fresh machine;
    mcp-gateway) run last, so that the build overlaps the rest of the session instead of being
    waited for near its start. A stable sort: everything else keeps its order."""
    items.sort(key=lambda item: "template_ready" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session", autouse=True)
def _no_sandbox_outlives_the_session() -> Iterator[None]:
    yield
    reset_all()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    # building code-interpreter-v1 costs minutes of CPU when its layers aren't cached yet:
    # only when the session runs its tests
    wants_ci = any("test_code_interpreter" in item.nodeid for item in request.session.items)
    wants_mcp = any("test_mcp_gateway" in item.nodeid for item in request.session.items)
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot"), api_key=ids.new_api_key(),
                 extra_env={"SANDLOT_CODE_INTERPRETER_TEMPLATE": "true" if wants_ci else "false",
                            "SANDLOT_MCP_GATEWAY_TEMPLATE": "true" if wants_mcp else "false"})
    srv.start()
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


@pytest.fixture
def sandbox(server: Server) -> Iterator["object"]:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=120)
    yield sbx
    sbx.kill()
