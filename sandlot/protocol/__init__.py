"""The host/sandbox line: envd's wire contract, shared by the control plane and envd.

Holds envd's ``.proto`` files (``proto/``, regenerated with ``proto/generate.sh``), the code
generated from them (``gen/``) and the auth helpers both sides must compute identically
(``auth.py``). It is copied into every sandbox's read-only envd runtime beside
``sandlot/envd``, so it imports nothing else from ``sandlot`` (``tests/unit/test_protocol_package.py``
checks): host code stays on the host, envd code stays in ``sandlot/envd``.
"""
