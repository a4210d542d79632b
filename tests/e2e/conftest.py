"""Fixtures: one real server per test session, SDK environment pointing at it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sandlot import ids
from tests.e2e.server import STARTED, Server


@pytest.fixture(scope="session", autouse=True)
def _no_sandbox_outlives_the_session() -> Iterator[None]:
    yield
    instances = set()
    for srv in STARTED:
        if srv.instance not in instances:
            instances.add(srv.instance)
            srv.reset()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    # building code-interpreter-v1 costs minutes of CPU when its layers aren't cached yet:
    # only when the session runs its tests
    wants_ci = any("test_code_interpreter" in item.nodeid for item in request.session.items)
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot"), api_key=ids.new_api_key(),
                 extra_env={"SANDLOT_CODE_INTERPRETER_TEMPLATE": "true" if wants_ci else "false"})
    srv.start()
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DOMAIN")}
    os.environ.update({"E2B_API_URL": srv.url, "E2B_SANDBOX_URL": srv.url, "E2B_API_KEY": srv.api_key})
    os.environ.pop("E2B_DOMAIN", None)
    yield srv
    srv.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def sandbox(server: Server) -> Iterator["object"]:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=120)
    yield sbx
    sbx.kill()
