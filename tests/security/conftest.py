"""The adversarial suite: every security claim in docs/security.md is attacked here.

Each test plants a canary on the host (a file, a loopback-only HTTP service), attacks
with one ordinary API key and the unmodified clients or raw sockets, asserts the canary
is untouched, and asserts the legitimate feature next to the attack still works.
The ``server`` and ``sandbox`` fixtures come from ``tests/conftest.py``: one session
server for e2e and security tests alike (two would share an instance name and subnet).
"""

from collections.abc import Iterator

import pytest

from tests.security.labhost import LabHost, lab_host


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHost]:
    """A test host in a network namespace this test run made (addresses of its own)."""
    with lab_host(tmp_path_factory.mktemp("testhost")) as h:
        yield h
