"""The adversarial suite: every security claim in docs/security.md is attacked here.

Each test plants a canary on the host (a file, a loopback-only HTTP service), attacks
with one ordinary API key and the unmodified clients or raw sockets, asserts the canary
is untouched, and asserts the legitimate feature next to the attack still works.
The ``server`` and ``sandbox`` fixtures come from ``tests/conftest.py``: one session
server for e2e and security tests alike (two would share an instance name and subnet).
"""
