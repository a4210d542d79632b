"""Sandlot's code-interpreter server: E2B's port-49999 API over real Jupyter kernels.

Runs inside ``code-interpreter-v1`` sandboxes under the template's own venv (which has
``jupyter_client``/``ipykernel``), imported from a copy of this package that
``template.py`` installs into the envd runtime (``/.sandlot``); only ``template.py`` (the
server-side build hook) belongs to the control plane and is left out of that copy. So
nothing else here may import the rest of ``sandlot``.
"""
