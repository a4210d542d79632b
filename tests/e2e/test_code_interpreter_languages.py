"""The unmodified ``e2b-code-interpreter`` SDK against every language of ``code-interpreter-v1``
(Python, JavaScript and TypeScript on Deno's kernel, R on IRkernel, Java on JJava, Bash) and
the rich results E2B's template adds (``result.chart``, ``result.data``, PNGs, ``display()``).

One sandbox for the module: each language's kernel starts on first use, contexts made here
are removed by the test that made them (the sandbox's memory holds one kernel per language).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from e2b import TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox
from e2b_code_interpreter.charts import BarChart, ChartType, LineChart

from tests.e2e.test_code_interpreter import template_ready  # noqa: F401  (the module's fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LANGUAGES = ["python", "javascript", "typescript", "r", "java", "bash"]

HELLO = {
    "python": 'print("hello")',
    "javascript": 'console.log("hello")',
    "typescript": 'const greeting: string = "hello"\nconsole.log(greeting)',
    "r": 'cat("hello\\n")',
    "java": 'System.out.println("hello");',
    "bash": "echo hello",
}
PRINT_ENV = {  # prints the value of env var NAME and a newline
    "python": 'import os; print(os.environ.get("NAME", "unset"))',
    "javascript": 'console.log(process.env.NAME ?? "unset")',
    "typescript": 'console.log(Deno.env.get("NAME") ?? "unset")',
    "r": 'cat(Sys.getenv("NAME", "unset"), "\\n", sep = "")',
    "java": 'System.out.println(System.getenv().getOrDefault("NAME", "unset"));',
    "bash": 'echo "${NAME:-unset}"',
}
PRINT_CWD = {
    "python": "import os; print(os.getcwd())",
    "javascript": "console.log(process.cwd())",
    "typescript": "console.log(Deno.cwd())",
    "r": 'cat(getwd(), "\\n", sep = "")',
    "java": 'System.out.println(System.getProperty("user.dir"));',
    "bash": "pwd",
}
SET_STATE = {
    "python": "kept = 41",
    "javascript": "var kept = 41",
    "typescript": "let kept: number = 41",
    "r": "kept <- 41",
    "java": "int kept = 41;",
    "bash": "kept=41",
}
PRINT_STATE = {
    "python": "print(kept + 1)",
    "javascript": "console.log(kept + 1)",
    "typescript": "console.log(kept + 1)",
    "r": 'cat(kept + 1, "\\n", sep = "")',
    "java": "System.out.println(kept + 1);",
    "bash": "echo $((kept + 1))",
}
FAIL = {  # raises an error whose value mentions "boom"
    "python": 'raise ValueError("boom")',
    "javascript": 'throw new TypeError("boom")',
    "typescript": 'const oops: string = "boom"\nthrow new RangeError(oops)',
    "r": 'stop("boom")',
    "java": 'throw new IllegalStateException("boom");',
    "bash": "echo boom; (exit 3)",
}
FAILED = {  # the error's name and value, as each kernel reports them
    "python": ("ValueError", "boom"),
    "javascript": ("TypeError", "boom"),
    "typescript": ("RangeError", "boom"),
    "r": ("ERROR", "Error in eval(expr, envir, enclos): boom\n"),
    "java": ("RuntimeException", "java.lang.IllegalStateException, boom"),  # JJava's
    "bash": ("", "3"),  # bash_kernel's: the exit status, output on stdout
}


def stdout(execution) -> str:
    return "".join(execution.logs.stdout)


@pytest.fixture(scope="module")
def sbx(template_ready: None) -> Iterator[Sandbox]:  # noqa: F811
    sandbox = Sandbox.create(timeout=600, envs={"FROM_CREATE": "from-create"})
    yield sandbox
    sandbox.kill()


@pytest.mark.parametrize("language", LANGUAGES)
def test_hello_world(sbx: Sandbox, language: str) -> None:
    execution = sbx.run_code(HELLO[language], language=language)
    assert execution.error is None, execution.error
    assert stdout(execution) == "hello\n"


@pytest.mark.parametrize("language", LANGUAGES)
def test_env_vars(sbx: Sandbox, language: str) -> None:
    given = sbx.run_code(PRINT_ENV[language].replace("NAME", "FROM_CREATE"), language=language)
    assert stdout(given) == "from-create\n", given
    per_run = sbx.run_code(PRINT_ENV[language].replace("NAME", "PER_RUN"), language=language,
                           envs={"PER_RUN": "only 'now' \"here\""})
    assert stdout(per_run) == "only 'now' \"here\"\n", per_run
    after = sbx.run_code(PRINT_ENV[language].replace("NAME", "PER_RUN"), language=language)
    assert stdout(after) == "unset\n", after  # envs= is for that one execution


@pytest.mark.parametrize("language", LANGUAGES)
def test_context_keeps_state_and_cwd(sbx: Sandbox, language: str) -> None:
    ctx = sbx.create_code_context(cwd="/tmp", language=language)
    try:
        assert (ctx.language, ctx.cwd) == (language, "/tmp")
        assert ctx.id in [c.id for c in sbx.list_code_contexts()]
        assert stdout(sbx.run_code(PRINT_CWD[language], context=ctx)) == "/tmp\n"
        assert sbx.run_code(SET_STATE[language], context=ctx).error is None
        assert stdout(sbx.run_code(PRINT_STATE[language], context=ctx)) == "42\n"
        elsewhere = sbx.run_code(PRINT_CWD[language], language=language)  # the language's default context
        assert stdout(elsewhere) == "/home/user\n"
    finally:
        sbx.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in sbx.list_code_contexts()]


@pytest.mark.parametrize("language", LANGUAGES)
def test_errors(sbx: Sandbox, language: str) -> None:
    seen = []
    execution = sbx.run_code(FAIL[language], language=language, on_error=seen.append)
    error = execution.error
    assert error is not None and seen and seen[0].name == error.name
    assert (error.name, error.value) == FAILED[language]
    assert language == "bash" or "boom" in error.traceback
    assert sbx.run_code(HELLO[language], language=language).error is None  # the kernel carries on


@pytest.mark.parametrize(("language", "loop"), [
    ("javascript", "while (true) {}"),
    ("r", "repeat {}"),
    ("java", "while (true) {}"),
])
def test_timeout_interrupts_the_cell(sbx: Sandbox, language: str, loop: str) -> None:
    ctx = sbx.create_code_context(language=language)
    try:
        sbx.run_code(SET_STATE[language], context=ctx)
        with pytest.raises(TimeoutException):
            sbx.run_code(loop, context=ctx, timeout=3)
        assert stdout(sbx.run_code(PRINT_STATE[language], context=ctx, timeout=60)) == "42\n"  # interrupted
    finally:
        sbx.remove_code_context(ctx)


def test_a_cell_the_interrupt_cannot_stop_gets_a_fresh_kernel(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(language="javascript")
    try:
        sbx.run_code(SET_STATE["javascript"], context=ctx)
        with pytest.raises(TimeoutException):
            sbx.run_code("await new Promise(() => {})", context=ctx, timeout=3)  # never settles
        after = sbx.run_code(PRINT_STATE["javascript"], context=ctx, timeout=60)
        assert after.error is not None and after.error.name == "ReferenceError"  # a new kernel
        assert stdout(sbx.run_code(HELLO["javascript"], context=ctx, timeout=60)) == "hello\n"
    finally:
        sbx.remove_code_context(ctx)


def test_error_names(sbx: Sandbox) -> None:
    assert sbx.run_code("1 / 0").error.name == "ZeroDivisionError"
    js = sbx.run_code('throw new TypeError("boom")', language="javascript").error
    assert (js.name, js.value) == ("TypeError", "boom")
    undefined = sbx.run_code("notDefinedAnywhere + 1", language="typescript").error
    assert undefined.name == "ReferenceError" and "notDefinedAnywhere" in undefined.value


def test_javascript_top_level_await_and_es_modules(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        'import { join } from "node:path";\n'
        "const parts = await Promise.resolve([\"a\", \"b\"]);\n"
        "join(...parts)",
        language="javascript",
    )
    assert execution.error is None, execution.error
    assert execution.text == "a/b"
    later = sbx.run_code("await new Promise((resolve) => setTimeout(() => resolve(join('x', 'y')), 10))",
                         language="javascript")
    assert later.text == "x/y"  # the import stays in the context

    sbx.files.write("/home/user/greet.mjs", "export const greet = (who) => `hello ${who}`;\nexport default 42;\n")
    own = sbx.run_code('import answer, { greet } from "./greet.mjs";\ngreet(answer)', language="javascript")
    assert own.text == "hello 42"  # a module of the user's own, relative to the cwd
    dynamic = sbx.run_code('(await import("/home/user/greet.mjs")).greet("dynamic")', language="javascript")
    assert dynamic.text == "hello dynamic"
    sbx.files.write("/home/user/typed.ts", "export function twice(n: number): number { return 2 * n }\n")
    assert sbx.run_code('import { twice } from "./typed.ts";\ntwice(21)', language="typescript").text == "42"


def test_javascript_output_that_follows_the_idle_status_is_kept(sbx: Sandbox) -> None:
    """Deno publishes console output and awaited results from another task than its idle
    status; under load they came after it and the cell looked empty (1-15 % of cells)."""
    for i in range(25):
        printed = sbx.run_code(f'console.log("line {i}")', language="javascript",
                               envs={"ROUND": str(i)} if i % 2 else None)
        assert printed.logs.stdout == [f"line {i}\n"]
        awaited = sbx.run_code(f"await new Promise((resolve) => setTimeout(() => resolve({i}), 5))",
                               language="javascript")
        assert awaited.text == str(i)


def test_typescript_types(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "interface Point { x: number; y: number }\n"
        "function norm1(p: Point): number { return Math.abs(p.x) + Math.abs(p.y) }\n"
        "const p: Point = { x: -40, y: 2 }\n"
        "norm1(p)",
        language="typescript",
    )
    assert execution.error is None, execution.error
    assert execution.text == "42"


def test_r_data_frame(sbx: Sandbox) -> None:
    execution = sbx.run_code('data.frame(name = c("a", "b"), value = c(1.5, 2))', language="r")
    assert execution.error is None, execution.error
    [frame] = execution.results  # IRkernel shows a cell's value as display data
    assert frame.text.split() == ["name", "value", "1", "a", "1.5", "2", "b", "2.0"]
    assert "<table" in frame.html and "A data.frame: 2 × 2" in frame.html
    assert frame.markdown and frame.latex
    printed = sbx.run_code("print(data.frame(x = 1:2))", language="r")
    assert stdout(printed) == "  x\n1 1\n2 2\n"


def test_java_values_and_output(sbx: Sandbox) -> None:
    execution = sbx.run_code('String who = "java";\nSystem.out.println("hi " + who);\n6 * 7', language="java")
    assert execution.error is None, execution.error
    assert stdout(execution) == "hi java\n"
    assert execution.text == "42"


def test_matplotlib_line_chart(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "plt.figure()\n"
        "plt.plot([1, 2, 3], [1, 4, 9], label='squares')\n"
        "plt.plot([1, 2, 3], [1, 2, 3], label='linear')\n"
        "plt.title('growth')\nplt.xlabel('x [s]')\nplt.ylabel('y')\n"
        "plt.show()"
    )
    assert execution.error is None, execution.error
    [figure] = execution.results
    assert base64.b64decode(figure.png).startswith(b"\x89PNG\r\n\x1a\n")
    chart = figure.chart
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert chart.title == "growth" and chart.x_label == "x [s]" and chart.x_unit == "s"
    assert [e.label for e in chart.elements] == ["squares", "linear"]
    assert [tuple(map(float, p)) for p in chart.elements[0].points] == [(1, 1), (2, 4), (3, 9)]


def test_matplotlib_bar_chart(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.bar(['apples', 'pears'], [3, 5], label='fruit')\n"
        "ax.set_title('stock')\n"
        "plt.show()"
    )
    assert execution.error is None, execution.error
    chart = execution.results[0].chart
    assert isinstance(chart, BarChart) and chart.type == ChartType.BAR and chart.title == "stock"
    assert [(e.label, float(e.value)) for e in chart.elements] == [("apples", 3.0), ("pears", 5.0)]


def test_dataframe_data(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import pandas as pd\n"
        "pd.DataFrame({'a': [1, 2], 'b': ['x', 'y'], 't': pd.to_datetime(['2024-01-01', '2024-01-02'])})"
    )
    result = execution.results[0]
    assert result.is_main_result and "<table" in result.html
    assert result.data == {"a": [1, 2], "b": ["x", "y"], "t": ["2024-01-01T00:00:00", "2024-01-02T00:00:00"]}
    assert "data" in result.formats()


def test_saved_and_displayed_figures_are_pngs(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "from IPython.display import Image, display\n"
        "fig, ax = plt.subplots()\nax.scatter([1, 2], [3, 4])\n"
        "fig.savefig('/tmp/saved.png')\nplt.close(fig)\n"
        "display(Image(filename='/tmp/saved.png'))\n"
        "display(fig)"
    )
    assert execution.error is None, execution.error
    saved, shown = execution.results
    assert base64.b64decode(saved.png).startswith(b"\x89PNG") and saved.chart is None
    assert base64.b64decode(shown.png).startswith(b"\x89PNG")
    assert shown.chart is not None and shown.chart.type == ChartType.SCATTER
    # a figure only saved, never shown, is still open at the end of the cell: it comes back too
    only_saved = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\n"
                              "plt.savefig('/tmp/only_saved.png')")
    [figure] = only_saved.results
    assert base64.b64decode(figure.png).startswith(b"\x89PNG") and figure.chart.type == ChartType.LINE
    assert sbx.files.read("/tmp/only_saved.png", format="bytes").startswith(b"\x89PNG")


def test_display_data(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "from IPython.display import HTML, display\n"
        "display(HTML('<b>bold</b>'))\n"
        "display({'k': [1, 2]})\n"
        "{'answer': 42}"
    )
    html, shown_json, main = execution.results
    assert html.html == "<b>bold</b>" and not html.is_main_result
    assert shown_json.json == {"k": [1, 2]}
    assert main.is_main_result and main.json == {"answer": 42} and main.text == "{'answer': 42}"


def test_context_api_defaults(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context()
    try:
        assert (ctx.language, ctx.cwd) == ("python", "/home/user")
        listed = {c.id: c for c in sbx.list_code_contexts()}
        assert (listed[ctx.id].language, listed[ctx.id].cwd) == ("python", "/home/user")
        sbx.run_code("x = 1", context=ctx)
        sbx.restart_code_context(ctx)
        assert sbx.run_code("x", context=ctx).error.name == "NameError"
        assert ctx.id in [c.id for c in sbx.list_code_contexts()]  # same id after a restart
    finally:
        sbx.remove_code_context(ctx.id)


async def test_async_languages(template_ready: None) -> None:  # noqa: F811
    sandbox = await AsyncSandbox.create(timeout=300, envs={"FROM_CREATE": "async"})
    try:
        js = await sandbox.create_code_context(language="javascript", cwd="/tmp")
        assert (js.language, js.cwd) == ("javascript", "/tmp")
        await sandbox.run_code("const base = await Promise.resolve(40)", context=js)
        assert (await sandbox.run_code("base + 2", context=js)).text == "42"
        r = await sandbox.run_code('Sys.getenv("FROM_CREATE")', language="r")
        assert [x.text for x in r.results] == ['[1] "async"']
        java = await sandbox.run_code('System.out.println(System.getenv("PER_RUN"));', language="java",
                                      envs={"PER_RUN": "java env"})
        assert java.logs.stdout == ["java env\n"]
        chart = await sandbox.run_code("import matplotlib.pyplot as plt\nplt.pie([1, 3], labels=['a', 'b'])\nplt.show()")
        assert chart.results[0].chart.type == ChartType.PIE
        assert [e.label for e in chart.results[0].chart.elements] == ["a", "b"]
        await sandbox.remove_code_context(js)
    finally:
        await sandbox.kill()
