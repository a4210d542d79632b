"""The unmodified ``e2b-code-interpreter`` SDK against Sandlot's ``code-interpreter-v1``.

The session server builds the template at start-up (minutes the first time on a machine,
then from cached layers); the tests wait for that build through the API, then drive real
Jupyter kernels through the front door on port 49999.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import SandboxException, TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox

from tests.e2e.server import Server
from tests.e2e.test_js_sdk import JS_DIR, _node_major

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TEMPLATE = "code-interpreter-v1"
BUILD_WAIT_S = 840
"""A cold build (apt: R and a JDK; pip: Deno, the Python stack) took 483 s at load 13-14,
started with the server, before this wait begins; below the tests' 900 s timeout."""


def _newest_build(server: Server) -> tuple[str, dict]:
    response = httpx.get(f"{server.url}/templates/{TEMPLATE}", headers={"X-API-Key": server.api_key}, timeout=10)
    response.raise_for_status()
    template = response.json()
    assert template["public"] is True
    return template["templateID"], template["builds"][0]


def _status(server: Server, template_id: str, build_id: str, offset: int) -> dict:
    response = httpx.get(f"{server.url}/templates/{template_id}/builds/{build_id}/status",
                         params={"logsOffset": offset}, headers={"X-API-Key": server.api_key}, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def template_ready(server: Server) -> None:
    """Waits (bounded) for the start-up build; meanwhile a create answers a clear error."""
    template_id, build = _newest_build(server)
    logs: list[str] = []
    deadline = time.monotonic() + BUILD_WAIT_S
    checked_early_create = False
    while True:
        status = _status(server, template_id, build["buildID"], len(logs))
        logs += status["logs"]
        if status["status"] == "ready":
            break
        assert status["status"] != "error", f"{status.get('reason')}\n" + "\n".join(logs[-40:])
        if not checked_early_create:
            with pytest.raises(SandboxException, match="still being built"):
                Sandbox.create(TEMPLATE, timeout=30)
            checked_early_create = True
        assert time.monotonic() < deadline, "code-interpreter-v1 not built in time:\n" + "\n".join(logs[-40:])
        time.sleep(2)
    assert any("RUN" in line for line in logs) or logs, "the build log is readable through the API"


@pytest.fixture(scope="module")
def sbx(template_ready: None) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=300, envs={"SANDLOT_CI_FROM_CREATE": "from-create"})
    yield sandbox
    sandbox.kill()


def test_state_is_kept_across_calls(sbx: Sandbox) -> None:
    first = sbx.run_code("x = 41")
    assert first.error is None and first.results == []
    second = sbx.run_code("x + 1")
    assert second.text == "42"
    assert second.execution_count is not None and second.execution_count > first.execution_count


def test_stdout_stderr_callbacks_and_logs(sbx: Sandbox) -> None:
    out, err = [], []
    execution = sbx.run_code(
        "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)",
        on_stdout=out.append, on_stderr=err.append,
    )
    assert execution.logs.stdout == ["to stdout\n"] and execution.logs.stderr == ["to stderr\n"]
    assert [m.line for m in out] == ["to stdout\n"] and not out[0].error
    assert [m.line for m in err] == ["to stderr\n"] and err[0].error
    assert out[0].timestamp


def test_exception_is_the_execution_error(sbx: Sandbox) -> None:
    errors = []
    execution = sbx.run_code("1 / 0", on_error=errors.append)
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "ZeroDivisionError" in execution.error.traceback
    assert errors and errors[0].name == "ZeroDivisionError"


def test_matplotlib_figure_is_a_png(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()"
    )
    assert execution.error is None
    pngs = [r for r in execution.results if r.png]
    assert len(pngs) == 1 and not pngs[0].is_main_result
    assert base64.b64decode(pngs[0].png).startswith(b"\x89PNG\r\n\x1a\n")


def test_rich_results(sbx: Sandbox) -> None:
    frame = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    assert frame.results[0].is_main_result and frame.results[0].html and "<table" in frame.results[0].html
    shown = sbx.run_code("from IPython.display import display, Markdown\ndisplay(Markdown('**hi**'))")
    assert shown.results[0].markdown == "**hi**"


def test_code_contexts(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(cwd="/tmp")
    assert ctx.language == "python" and ctx.cwd == "/tmp"
    try:
        assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
        sbx.run_code("only_here = 7", context=ctx)
        assert sbx.run_code("only_here", context=ctx).text == "7"
        assert sbx.run_code("only_here").error.name == "NameError"  # the default context is another kernel
        assert ctx.id in [c.id for c in sbx.list_code_contexts()]
        sbx.restart_code_context(ctx)
        assert sbx.run_code("only_here", context=ctx).error.name == "NameError"  # a fresh kernel
    finally:
        sbx.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in sbx.list_code_contexts()]
    with pytest.raises(Exception, match="not found"):
        sbx.run_code("1", context=ctx)


def test_env_vars(sbx: Sandbox) -> None:
    # given at create: the kernel started before the sandbox had them (warm pool/snapshot)
    assert sbx.run_code("import os; os.environ['SANDLOT_CI_FROM_CREATE']").text == "from-create"
    per_run = sbx.run_code("import os; os.environ.get('PER_RUN')", envs={"PER_RUN": "only now"})
    assert per_run.text == "only now"
    assert sbx.run_code("import os; os.environ.get('PER_RUN', 'gone')").text == "gone"
    ctx = sbx.create_code_context()
    try:
        assert sbx.run_code("import os; os.environ['SANDLOT_CI_FROM_CREATE']", context=ctx).text == "from-create"
    finally:
        sbx.remove_code_context(ctx)


def test_timeout_interrupts_the_cell_and_the_context_still_works(sbx: Sandbox) -> None:
    sbx.run_code("survivor = 'still here'")
    t0 = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.run_code("import time\nwhile True: time.sleep(0.1)", timeout=3)
    assert time.monotonic() - t0 < 30
    t1 = time.monotonic()
    assert sbx.run_code("survivor").text == "still here"  # interrupted, not restarted
    assert time.monotonic() - t1 < 15


def test_unsupported_language_is_a_clear_error(sbx: Sandbox) -> None:
    # every language E2B has is installed (test_code_interpreter_languages.py); others are refused
    with pytest.raises(SandboxException, match="Language 'cobol' is not supported"):
        sbx.run_code("DISPLAY 'HI'", language="cobol")
    with pytest.raises(SandboxException, match="Language 'fortran' is not supported"):
        sbx.create_code_context(language="fortran")


async def test_async_sandbox(template_ready: None) -> None:
    sandbox = await AsyncSandbox.create(timeout=120)
    try:
        lines: list[str] = []

        async def collect(message) -> None:
            lines.append(message.line)

        execution = await sandbox.run_code("for i in range(3): print(i)", on_stdout=collect)
        assert "".join(lines) == "0\n1\n2\n" and execution.logs.stdout == lines  # the kernel may batch lines
        assert (await sandbox.run_code("2 ** 10")).text == "1024"
        bash = await sandbox.run_code("echo $((6 * 7)) $(whoami)", language="bash")
        assert bash.logs.stdout == ["42 user\n"]
        ctx = await sandbox.create_code_context()
        assert (await sandbox.run_code("'isolated'", context=ctx)).text == "isolated"
        await sandbox.remove_code_context(ctx.id)
    finally:
        await sandbox.kill()


@pytest.mark.skipif(_node_major() < 20, reason="the @e2b/code-interpreter npm package needs Node >= 20")
def test_js_sdk(server: Server, template_ready: None) -> None:
    """The unmodified @e2b/code-interpreter JS SDK (npm, Node's test runner)."""
    assert (JS_DIR / "node_modules" / "@e2b" / "code-interpreter").is_dir(), "run `make test` (tests/js deps)"
    env = dict(os.environ, E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=server.api_key)
    result = subprocess.run(["node", "--test", "--test-reporter=spec", "code_interpreter.test.mjs"],
                            cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=300)
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
