"""Template builds with the unmodified SDK: steps run in real build sandboxes, layers are cached.

Every test puts a fresh nonce into its first step: the layer cache lives in the
shared data dir, so without it a "cold" build could be served from an earlier run.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, Template, wait_for_port
from e2b.exceptions import BuildException

from tests.e2e.server import data_dir as default_data_dir
from tests.e2e.server import Server

pytestmark = pytest.mark.timeout(900)


def build_sandbox_dirs(server: Server) -> list[Path]:
    data_dir = Path(server.env().get("SANDLOT_DATA_DIR") or default_data_dir())
    return list((data_dir / "runtime" / server.instance / "sandboxes").glob("b*"))


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def name(prefix: str) -> str:
    return f"{prefix}-{nonce()}"


class Logs:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, entry) -> None:
        self.messages.append(entry.message)

    def text(self) -> str:
        return "\n".join(self.messages)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.txt").write_text("hello from COPY\n")
    (tmp_path / "app" / "sub").mkdir()
    (tmp_path / "app" / "sub" / "deep.txt").write_text("deep\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho script ran\n")
    return tmp_path


def full_template(context: Path, tag: str) -> Template:
    return (
        Template(file_context_path=str(context))
        .from_template("base")
        .run_cmd(f"echo {tag} > /tmp/nonce")
        .set_envs({"PIP_BREAK_SYSTEM_PACKAGES": "1", "GREETING": "hi there"})
        .pip_install("six")
        .set_workdir("/srv/app")
        .copy("app/", "/srv/app/", user="user")
        .copy("run.sh", "/usr/local/bin/run.sh", mode=0o755)
        .set_user("worker")
        .run_cmd("whoami > ~/who && pwd > ~/where")
        .set_start_cmd("python3 -m http.server 8000", wait_for_port(8000))
    )


@pytest.mark.slow
def test_build_full_template_and_create_sandbox(server: Server, context: Path) -> None:
    tpl_name = name("full")
    logs = Logs()
    t0 = time.monotonic()
    tag = nonce()
    info = Template.build(full_template(context, tag), tpl_name, on_build_logs=logs, cpu_count=1, memory_mb=512)
    cold = time.monotonic() - t0
    assert info.template_id and info.build_id
    text = logs.text()
    assert "six" in text and "CACHED" not in text  # pip's output streamed into the build log

    sbx = Sandbox.create(tpl_name, timeout=120)
    try:
        run = sbx.commands.run
        assert run("whoami").stdout.strip() == "worker"  # USER → default user of sandboxes
        assert run("pwd").stdout.strip() == "/srv/app"  # WORKDIR → default workdir
        assert run("echo $GREETING").stdout.strip() == "hi there"  # ENV → sandbox env
        assert run("python3 -c 'import six; print(six.__name__)'").stdout.strip() == "six"
        assert run("cat /srv/app/hello.txt /srv/app/sub/deep.txt").stdout == "hello from COPY\ndeep\n"
        assert run("stat -c %U /srv/app/hello.txt").stdout.strip() == "user"
        assert run("stat -c %a /usr/local/bin/run.sh").stdout.strip() == "755"
        assert run("run.sh").stdout.strip() == "script ran"
        assert run("cat ~/who ~/where").stdout.split() == ["worker", "/srv/app"]
        # the start command is running when create returns (readyCmd passed)
        assert run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/").stdout == "200"
        assert not run("cat /etc/hostname").stdout.strip() == ""  # runtime files are fresh, not from layers
    finally:
        sbx.kill()

    # identical second build: every step from cache, much faster
    logs2 = Logs()
    t0 = time.monotonic()
    Template.build(full_template(context, tag), tpl_name, on_build_logs=logs2)
    warm = time.monotonic() - t0
    cached = [m for m in logs2.messages if m.startswith("CACHED")]
    assert len(cached) == 8, logs2.text()
    assert warm < cold / 2, (warm, cold)
    # each build keeps a post-ready snapshot in the shared data dir: deleting the template frees them
    assert httpx.delete(f"{server.url}/templates/{tpl_name}", headers={"X-API-Key": server.api_key}).status_code == 204


def _steps_run(logs: Logs) -> list[str]:
    return [m.split("] ", 1)[1] for m in logs.messages if m.startswith("[") and ": done in" not in m]


def test_changed_step_rebuilds_only_later_steps(server: Server) -> None:
    tag = nonce()
    tpl_name = name("partial")

    def tpl(middle: str) -> Template:
        return (Template().from_template("base").run_cmd(f"echo {tag} > /tmp/a")
                .run_cmd(f"echo {middle} > /tmp/b").run_cmd("cat /tmp/a /tmp/b > /tmp/c"))

    Template.build(tpl("one"), tpl_name)
    logs = Logs()
    Template.build(tpl("two"), tpl_name, on_build_logs=logs)
    assert [m.split("] ")[1] for m in logs.messages if m.startswith("CACHED")] == [f"RUN echo {tag} > /tmp/a"]
    assert _steps_run(logs) == ["RUN echo two > /tmp/b", "RUN cat /tmp/a /tmp/b > /tmp/c"]
    with Sandbox.create(tpl_name, timeout=60) as sbx:
        assert sbx.commands.run("cat /tmp/c").stdout.split() == [tag, "two"]

    # skip_cache rebuilds everything; skip_cache() before one step rebuilds it and what follows
    logs = Logs()
    Template.build(tpl("two"), tpl_name, on_build_logs=logs, skip_cache=True)
    assert not [m for m in logs.messages if m.startswith("CACHED")]
    logs = Logs()
    forced = (Template().from_template("base").run_cmd(f"echo {tag} > /tmp/a").skip_cache()
              .run_cmd("echo two > /tmp/b").run_cmd("cat /tmp/a /tmp/b > /tmp/c"))
    Template.build(forced, tpl_name, on_build_logs=logs)
    assert len([m for m in logs.messages if m.startswith("CACHED")]) == 1
    assert len(_steps_run(logs)) == 2


def test_failing_run_reports_step_exit_code_and_output(server: Server) -> None:
    tpl_name = name("fails")
    template = (Template().from_template("base").run_cmd(f"echo {nonce()}")
                .run_cmd("echo about to fail; echo oops >&2; exit 7"))
    with pytest.raises(BuildException) as err:
        Template.build(template, tpl_name)
    message = str(err.value)
    assert "Step 2" in message and "exit code 7" in message and "oops" in message
    info = httpx.get(f"{server.url}/templates/{tpl_name}", headers={"X-API-Key": server.api_key}).json()
    assert info["buildStatus"] == "error"
    # nothing half-registered: no ready build to start sandboxes from, no build sandbox left behind
    with pytest.raises(Exception) as create_err:
        Sandbox.create(tpl_name)
    assert "no finished build" in str(create_err.value)
    assert not list(build_sandbox_dirs(server))


def test_build_log_polling_with_offset(server: Server) -> None:
    from e2b import Template as T

    tpl_name = name("poll")
    info = T.build_in_background(Template().from_template("base").run_cmd(f"for i in 1 2 3; do echo line$i-{nonce()}; done"), tpl_name)
    offset, seen, status = 0, [], None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        st = T.get_build_status(info, logs_offset=offset)
        offset += len(st.log_entries)
        seen += [e.message for e in st.log_entries]
        status = st.status.value
        if status in ("ready", "error") and not st.log_entries:
            break
        time.sleep(0.2)
    assert status == "ready"
    assert len(seen) == len(set(seen)) and sum(1 for m in seen if m.startswith("line")) == 3
    headers = {"X-API-Key": server.api_key}
    base = f"{server.url}/templates/{info.template_id}/builds/{info.build_id}"
    page = httpx.get(f"{base}/status", params={"logsOffset": 1, "limit": 2}, headers=headers).json()
    assert [e["message"] for e in page["logEntries"]] == seen[1:3]
    logs = httpx.get(f"{base}/logs", params={"direction": "backward", "limit": 1}, headers=headers).json()["logs"]
    assert logs[0]["message"] == seen[-1]
    assert httpx.get(f"{base}/logs", params={"level": "error"}, headers=headers).json()["logs"] == []


async def test_async_template_build(server: Server) -> None:
    from e2b import AsyncSandbox, AsyncTemplate

    tpl_name = name("async")
    marker = nonce()
    info = await AsyncTemplate.build(AsyncTemplate().from_template("base").run_cmd(f"echo {marker} > /tmp/m"), tpl_name)
    assert await AsyncTemplate.exists(tpl_name)
    sbx = await AsyncSandbox.create(tpl_name, timeout=60)
    try:
        assert (await sbx.commands.run("cat /tmp/m")).stdout.strip() == marker
        assert (await sbx.get_info()).template_id == info.template_id
    finally:
        await sbx.kill()
