"""envd as pid 1 of its own pid namespace (as in the sandbox), via util-linux unshare."""

from __future__ import annotations

import os
import shutil

import pytest

from .conftest import Envd


@pytest.fixture(scope="module")
def envd_pid1():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    e = Envd({"defaultUser": "root"}, wrapper=["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
    yield e
    e.stop()


def test_pid1_survives_signals_and_reaps(envd_pid1):
    sbx = envd_pid1.sandbox()
    r = sbx.commands.run("kill -TERM 1; kill -INT 1; kill -HUP 1; (sleep 0.2 >/dev/null 2>&1 &); sleep 0.6; "
                         "ps -eo stat= | grep -c '^Z' || true")
    assert r.stdout.strip() == "0"
    assert sbx.commands.run("echo alive").stdout == "alive\n"
