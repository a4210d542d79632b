"""`sandlot template gc` against a real server: a deleted template's layer goes, layers of an
existing template and of a running sandbox stay, and the deleted recipe simply builds again.

The data dir (and its layer cache) is shared with every other test server that may be
running right now, and ``--min-age 0`` drops the grace period that protects a layer another
server has just committed but not yet registered; so gc only ever considers this test's
own layers (``--only``), and the test only asserts about them.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, Template

from sandlot import ids
from tests.e2e.server import REPO, SANDLOT, Server, unique_instance, unique_subnet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def gc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # no warm pool: its idle sandboxes of a deleted template's build keep that build's layers
    # in use (rightly) until they are evicted or the server stops
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-gc"), api_key=ids.new_api_key(),
                 instance=unique_instance("g"), subnet=unique_subnet(9), extra_env={"SANDLOT_WARM_POOL_SIZE": "0"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _recipe(marker: str) -> Template:
    return Template().from_template("base").run_cmd(f"echo {marker} > /tmp/gc-marker")


def _top_layer(server: Server, build_id: str) -> Path:
    """The layer the recipe's own RUN step made (builds list their layers topmost first)."""
    with sqlite3.connect(server.workdir / "sandlot.db") as db:
        (layers,) = db.execute("SELECT layers FROM builds WHERE id = ?", (build_id,)).fetchone()
    top = Path(json.loads(layers)[0])
    assert top.name == "fs" and top.parent.parent.name == "layers", top
    return top.parent


def _gc(server: Server, *only: Path) -> str:
    args = [arg for entry in only for arg in ("--only", entry.name)]
    done = subprocess.run([str(SANDLOT), "template", "gc", "--yes", "--min-age", "0", *args], check=False,
                          env=server.env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_gc_deletes_only_unused_layers_and_they_are_rebuilt(gc_server: Server) -> None:
    opts = {"api_key": gc_server.api_key, "api_url": gc_server.url}
    sandbox_opts = {**opts, "sandbox_url": gc_server.url}
    nonce = uuid.uuid4().hex[:10]
    gone_name, kept_name, live_name = (f"gc-{kind}-{nonce}" for kind in ("gone", "kept", "live"))

    gone = Template.build(_recipe(f"gone-{nonce}"), gone_name, **opts)
    kept = Template.build(_recipe(f"kept-{nonce}"), kept_name, **opts)
    live = Template.build(_recipe(f"live-{nonce}"), live_name, **opts)
    gone_layer, kept_layer, live_layer = (_top_layer(gc_server, b.build_id) for b in (gone, kept, live))
    assert len({gone_layer, kept_layer, live_layer}) == 3

    sbx = Sandbox.create(gone_name, timeout=60, **sandbox_opts)
    assert sbx.commands.run("cat /tmp/gc-marker").stdout.strip() == f"gone-{nonce}"
    sbx.kill()
    headers = {"X-API-Key": gc_server.api_key}
    assert httpx.delete(f"{gc_server.url}/templates/{gone.template_id}", headers=headers).status_code == 204
    running = Sandbox.create(live_name, timeout=300, **sandbox_opts)
    try:
        out = _gc(gc_server, gone_layer, kept_layer, live_layer)

        assert gone_layer.name in out and "Deleted 1 entries" in out, out
        assert not gone_layer.exists()
        assert not list(gone_layer.parent.glob(f".gc-deleted-{gone_layer.name}-*"))
        assert kept_layer.is_dir() and live_layer.is_dir()
        assert running.commands.run("cat /tmp/gc-marker").stdout.strip() == f"live-{nonce}"
        with Sandbox.create(kept_name, timeout=60, **sandbox_opts) as other:
            assert other.commands.run("cat /tmp/gc-marker").stdout.strip() == f"kept-{nonce}"
    finally:
        running.kill()

    messages: list[str] = []
    again = Template.build(_recipe(f"gone-{nonce}"), gone_name, on_build_logs=lambda e: messages.append(e.message),
                           **opts)
    assert not [m for m in messages if m.startswith("CACHED")], messages  # the cache missed: rebuilt
    assert _top_layer(gc_server, again.build_id) == gone_layer and gone_layer.is_dir()
    with Sandbox.create(gone_name, timeout=60, **sandbox_opts) as sbx:
        assert sbx.commands.run("cat /tmp/gc-marker").stdout.strip() == f"gone-{nonce}"
