"""Jupyter iopub messages → the NDJSON lines the e2b-code-interpreter SDK parses (spec §5.3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from e2b_code_interpreter.models import Execution, parse_output

from sandlot.code_interpreter import messages
from sandlot.code_interpreter.languages import env_code, normalize


def _msg(kind: str, content: dict, date: datetime | None = None) -> dict:
    return {"msg_type": kind, "header": {"msg_type": kind, "date": date}, "content": content}


def test_lines_parse_with_the_sdk() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    stream = [
        _msg("execute_input", {"execution_count": 3, "code": "x"}),
        _msg("stream", {"name": "stdout", "text": "hi\n"}, when),
        _msg("stream", {"name": "stderr", "text": "warn\n"}, when),
        _msg("display_data", {"data": {"image/png": "iVBO", "text/plain": "<Figure>", "application/x-foo": 1}}),
        _msg("execute_result", {"data": {"text/plain": "'quoted'", "text/html": "<b>x</b>"}}),
        _msg("error", {"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": ["a", "b"]}),
        _msg("status", {"execution_state": "idle"}),
    ]
    lines = [messages.encode(line) for msg in stream if (line := messages.translate(msg)) is not None]
    lines.append(messages.encode(messages.END))
    assert all(raw.endswith(b"\n") and raw.count(b"\n") == 1 and raw.strip() for raw in lines)
    assert json.loads(lines[1])["timestamp"] == "2025-01-02T03:04:05.000678Z"

    execution = Execution()
    for raw in lines:
        parse_output(execution, raw.decode().rstrip("\n"))
    assert execution.execution_count == 3
    assert execution.logs.stdout == ["hi\n"] and execution.logs.stderr == ["warn\n"]
    figure, main = execution.results
    assert figure.png == "iVBO" and not figure.is_main_result and figure.extra == {"application/x-foo": 1}
    assert main.is_main_result and main.text == "quoted" and main.html == "<b>x</b>"
    assert execution.text == "quoted"
    assert execution.error.name == "ZeroDivisionError" and execution.error.traceback == "a\nb"


def test_language_names_and_env_code() -> None:
    assert normalize(None) == "python" and normalize("JS") == "javascript" and normalize("ts") == "typescript"
    namespace: dict = {}
    code = env_code("python", {"A": "it's \"q\"\n"}, ["GONE"])
    assert code is not None
    import os

    os.environ["GONE"] = "1"
    try:
        exec(code, namespace)  # the snippet the kernel runs
        assert os.environ["A"] == "it's \"q\"\n" and "GONE" not in os.environ
        assert set(namespace) == {"__builtins__"}  # leaves no names in the user's namespace
    finally:
        os.environ.pop("A", None)
    assert env_code("bash", {"A": "x y"}, ["B"]) == "export A='x y'; unset B"
    assert env_code("r", {"A": "x \"y\""}, ["B"]) == (
        'invisible({ do.call(Sys.setenv, list("A" = "x \\"y\\"")); Sys.unsetenv(c("B")) })')
    assert env_code("typescript", {"A": "1"}, ["B"]) == '{ Deno.env.set("A", "1");Deno.env.delete("B"); }'
    java = env_code("java", {"A": "1"}, ["B"])
    assert java is not None and '__m.put("A", "1");__m.remove("B");' in java
    assert 'System.setProperty("A", "1");System.clearProperty("B");' in java
    assert env_code("cobol", {"A": "1"}, []) is None


def test_kernels_of_languages() -> None:
    from sandlot.code_interpreter.languages import IPC_KERNELS, kernel_language

    assert kernel_language("javascript") == kernel_language("typescript") == "typescript"  # Deno's kernel
    assert [kernel_language(x) for x in ("python", "r", "java", "bash")] == ["python", "r", "java", "bash"]
    assert IPC_KERNELS == {"python", "bash"}  # the others only build tcp:// addresses


def test_chart_and_data_bundles_parse_with_the_sdk() -> None:
    """What ipython_startup.py's formatters add to a figure's and a DataFrame's bundle."""
    from e2b_code_interpreter.charts import LineChart

    chart = {"type": "line", "title": "t", "elements": [{"label": "s", "points": [[1.0, 2.0]]}],
             "x_label": "x", "y_label": "y", "x_unit": None, "y_unit": None, "x_ticks": [1.0],
             "x_tick_labels": ["1"], "x_scale": "linear", "y_ticks": [2.0], "y_tick_labels": ["2"],
             "y_scale": "linear"}
    figure = messages.translate(_msg("display_data", {"data": {"image/png": "iVBO", "e2b/chart": chart}}))
    frame = messages.translate(_msg("execute_result", {"data": {"text/plain": "df", "e2b/data": {"a": [1]}}}))
    execution = Execution()
    for line in (figure, frame):
        assert line is not None
        parse_output(execution, messages.encode(line).decode().rstrip("\n"))
    shown, main = execution.results
    assert isinstance(shown.chart, LineChart) and shown.chart.elements[0].points == [(1.0, 2.0)]
    assert shown.extra == {} and main.data == {"a": [1]} and main.is_main_result
