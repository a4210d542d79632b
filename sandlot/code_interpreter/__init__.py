"""Sandlot's code-interpreter server: E2B's port-49999 API over real Jupyter kernels.

Runs inside ``code-interpreter-v1`` sandboxes under the template's own venv (which has
``jupyter_client``/``ipykernel``), imported from a copy of this package that
``sandlot/templates/code_interpreter.py`` (the control plane's build hook) installs into the
envd runtime (``/.sandlot``). Only this package is copied, so nothing here may import the rest
of ``sandlot`` (``tests/unit/test_protocol_package.py`` checks).
"""
