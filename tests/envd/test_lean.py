"""envd's own routes without a web framework, and the imports it keeps out of every sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

from .conftest import REPO

PROBE = """
import sys
import sandlot.envd.__main__
loaded = sorted(sys.modules)
print(__import__("json").dumps({
    "frameworks": [m for m in loaded if m.split(".")[0] in ("starlette", "anyio", "click", "watchfiles")],
    "ssl": getattr(sys.modules.get("ssl"), "__doc__", None),
    "logging.config": hasattr(sys.modules.get("logging.config"), "dictConfig"),
    "importlib.metadata": hasattr(sys.modules.get("importlib.metadata"), "distribution"),
    "connectrpc": sys.modules["connectrpc"].__version__,
}))
"""


def test_envd_imports_no_framework_and_no_tls() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["frameworks"] == []
    assert got["ssl"] and "envd has no TLS" in got["ssl"]   # the stand-in, not OpenSSL
    assert got["logging.config"] is False and got["importlib.metadata"] is False
    assert got["connectrpc"] == "0.12.1"


def test_routes_answer_like_a_router(envd) -> None:
    health = httpx.get(envd.url + "/health")
    assert health.status_code == 204 and "content-length" not in health.headers
    assert httpx.head(envd.url + "/health").status_code == 204
    missing = httpx.get(envd.url + "/nope")
    assert (missing.status_code, missing.text) == (404, "Not Found")
    assert missing.headers["content-type"] == "text/plain; charset=utf-8"
    wrong = httpx.put(envd.url + "/files")
    assert (wrong.status_code, wrong.text) == (405, "Method Not Allowed")
    assert wrong.headers["allow"] == "GET, HEAD, POST"
    envs = httpx.get(envd.url + "/envs")
    assert envs.headers["content-type"] == "application/json"
    assert envs.json()["SBX_VAR"] == "from-init"
    assert envs.headers["content-length"] == str(len(envs.content))


def test_streamed_download_stops_when_the_client_goes_away(envd) -> None:
    """An endless file (a character device) streams until the client disconnects; envd must then
    stop reading it and close it."""
    with httpx.stream("GET", envd.url + "/files", params={"path": "/dev/zero", "username": "root"}) as r:
        assert r.status_code == 200
        got = 0
        for chunk in r.iter_raw():
            got += len(chunk)
            if got > 4 << 20:
                break
    deadline = time.monotonic() + 20
    while _open_files(envd.proc.pid) & {"/dev/zero"}:
        assert time.monotonic() < deadline, "envd kept reading /dev/zero after the client left"
        time.sleep(0.05)
    assert httpx.get(envd.url + "/health").status_code == 204


def _open_files(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return found
