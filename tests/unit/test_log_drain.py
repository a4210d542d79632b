"""The host-side drainer of a sandbox's stdio caps and rotates the log and never stops reading."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sandlot.runtime import log_drain


def test_log_is_capped_rotated_and_keeps_the_latest(tmp_path: Path) -> None:
    log = tmp_path / "envd.log"
    cap = 64 * 1024
    proc = subprocess.Popen([sys.executable, "-S", "-I", log_drain.__file__, str(log), str(cap)],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(2000):   # ~2 MB, 30x the cap: the writer never blocks for long
        proc.stdin.write(b"line %06d " % i + b"x" * 1000 + b"\n")
    proc.stdin.write(b"the last words\n")
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert log.stat().st_size <= cap and (tmp_path / "envd.log.1").stat().st_size <= cap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envd.log", "envd.log.1"]
    assert log.read_bytes().endswith(b"the last words\n")


def test_write_errors_do_not_stop_the_drain(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.write(w, b"a" * 1000)
    os.close(w)
    log_drain.drain(r, "/dev/full", 10_000)   # every write fails with ENOSPC: still reads to EOF
    os.close(r)


def test_an_existing_log_keeps_counting(tmp_path: Path) -> None:
    log = tmp_path / "envd.log"
    log.write_bytes(b"o" * 90)
    r, w = os.pipe()
    os.write(w, b"n" * 20)
    os.close(w)
    log_drain.drain(r, str(log), 100)
    os.close(r)
    assert (tmp_path / "envd.log.1").read_bytes() == b"o" * 90 and log.read_bytes() == b"n" * 20
