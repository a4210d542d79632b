"""The public ``code-interpreter-v1`` template, built by Sandlot's own pipeline at start-up.

It is an ordinary template (``fromTemplate base``, RUN steps, start/ready command), so
its build is logged, cached layer by layer and visible through the build-status API of
the team that owns it (the default team). The server code is not copied into the image:
it is installed into the envd runtime (mounted read-only at ``/.sandlot`` in every sandbox)
under a directory named by its content hash, and the start command runs it from there
under the template venv's python. So a Sandlot upgrade that changes the server changes
the start command, which rebuilds the template once (steps come from the layer cache);
and servers from different checkouts sharing a data dir (tests) never swap each other's
code (envd's own code is kept the same way, ``opt/envd/apps/<digest>``).

Runs in the control plane; never imported inside sandboxes (the server it installs is
``sandlot/code_interpreter``, which imports nothing else from ``sandlot``).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any


from sandlot.templates import builtin
from sandlot.templates import steps as build_steps
from sandlot.templates.builder import BuildRequest
from sandlot.templates.runtime_code import install_package

if TYPE_CHECKING:
    from sandlot.services import Services


NAME = "code-interpreter-v1"
VENV = "/opt/code-interpreter"
PACKAGES = [
    "ipykernel==7.4.0", "jupyter_client==8.10.0", "starlette==1.10.0", "uvicorn==0.54.0",
    "matplotlib==3.11.2", "numpy==2.4.6", "pandas==3.1.1", "bash_kernel==0.10.0",
    # E2B's own chart extraction (result.chart), JavaScript/TypeScript (Deno's built-in
    # Jupyter kernel; the wheel ships the binary) and Java (JJava, a JShell kernel)
    "e2b-charts==1.0.0", "deno==2.9.8", "jjava==1.0a8",
]
APT_PACKAGES = ["r-base-core", "r-cran-irkernel", "default-jdk-headless"]
"""R (IRkernel, whose kernelspec Debian installs as ``/usr/share/jupyter/kernels/ir``) and the
JDK JJava runs on (it needs ``jdk.jshell``, which a JRE lacks)."""
MEMORY_MB = 2048
"""A kernel with pandas and matplotlib loaded needs more than the 512 MB default, and each
language's kernel starts on first use of it: with all six default contexts running (two of
them Deno's, ≈ 175 MiB each) a sandbox uses 667 MiB, so 1 GB left little room for user data.
A limit, not a reservation: a fresh sandbox uses 85 MiB."""
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""The system bundle (the host's when ``trust_host_ca``): a venv's pip would use certifi's."""
SERVER_DIR = "opt/code-interpreter"
"""In the envd runtime: ``<digest>/sandlot/code_interpreter``, nothing else, so putting
``<digest>`` on ``PYTHONPATH`` shadows nothing of the venv."""
KERNELS = f"{VENV}/share/jupyter/kernels"
DENO_KERNEL = {
    "argv": [f"{VENV}/bin/deno", "jupyter", "--kernel", "--conn", "{connection_file}"],
    "display_name": "Deno", "language": "typescript", "env": {"DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1"},
    "interrupt_mode": "message",
}
"""What ``deno jupyter --install`` writes, but in the venv (that writes to a user's dir),
without ANSI colours (``1 + 1`` is the text ``2``, not ``\x1b[33m2\x1b[39m``), and interrupted
by an ``interrupt_request`` (Deno stops the running code and keeps its state; SIGINT, the
default, ends the kernel)."""
JAVA_KERNEL = {
    # jjava.jar directly: JJava's launcher would only start this same command as a second JVM.
    # java.util is opened so that env vars can be set in the running JVM (languages.env_code)
    "argv": ["java", "--add-opens", "jdk.jshell/jdk.jshell=ALL-UNNAMED",
             "--add-opens", "java.base/java.util=ALL-UNNAMED", "--add-opens", "java.base/java.lang=ALL-UNNAMED",
             "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-jar", f"{KERNELS}/java/jjava.jar", "{connection_file}"],
    "display_name": "Java (JJava)", "language": "java", "interrupt_mode": "message",
}


def _write_json(path: str, value: dict[str, Any]) -> str:
    return f"printf '%s' {shlex.quote(json.dumps(value))} > {path}"


STEPS: list[dict[str, Any]] = [
    # its own layer, first: the slowest download, and it changes least. The JRE's postinst
    # links its man page, and the base is built without /usr/share/man
    {"type": "RUN", "args": [
        "mkdir -p /usr/share/man/man1 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        + " ".join(APT_PACKAGES)
        + " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb",
        "root"]},
    {"type": "RUN", "args": [
        f"python3 -m venv {VENV}"
        f" && PIP_CERT={CA_BUNDLE} {VENV}/bin/pip install --no-cache-dir --disable-pip-version-check"
        " --progress-bar off "
        + " ".join(PACKAGES)
        + f" && {VENV}/bin/python -m bash_kernel.install --sys-prefix"
        f" && mkdir -p {KERNELS}/deno && {_write_json(f'{KERNELS}/deno/kernel.json', DENO_KERNEL)}"
        f" && {_write_json(f'{KERNELS}/java/kernel.json', JAVA_KERNEL)}"
        f" && chown -R user:user {VENV}",  # `%pip install` from a kernel (which runs as user) works
        "root"]},
    {"type": "ENV", "args": ["PATH", f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
    {"type": "USER", "args": ["user"]},
    {"type": "WORKDIR", "args": ["/home/user"]},
    # matplotlib's font cache and the .pyc of the big imports, once, instead of in every sandbox
    {"type": "RUN", "args": [f"{VENV}/bin/python -c 'import matplotlib.pyplot, pandas, ipykernel, e2b_charts'", "user"]},
]
READY_CMD = "curl -sf -o /dev/null http://localhost:49999/health"


SERVER_PACKAGE = Path(__file__).resolve().parent.parent / "code_interpreter"
"""``sandlot/code_interpreter``: only what runs inside the sandbox (this module stays on the host)."""


def install_server(runtime_dir: Path) -> str:
    """Install the server into the envd runtime; the in-sandbox dir to put on ``PYTHONPATH``."""
    return install_package(runtime_dir, SERVER_PACKAGE, SERVER_DIR)


def start_cmd(server_dir: str) -> str:
    return (f"PYTHONPATH={server_dir} PYTHONDONTWRITEBYTECODE=1 "
            f"exec {VENV}/bin/python -m sandlot.code_interpreter")


def recipe_tag(start: str) -> str:
    """Tags the build made from this exact recipe (server code included, through the start
    command's path), so a Sandlot upgrade that changes it rebuilds: the post-ready snapshot
    holds the running server. Unchanged steps come from the layer cache (seconds)."""
    recipe = json.dumps([STEPS, start, READY_CMD, MEMORY_MB])
    return "recipe-" + hashlib.sha256(recipe.encode()).hexdigest()[:12]


def ensure_built(services: Services) -> str | None:
    """Submit a build of ``code-interpreter-v1`` unless one from the current recipe is
    ready or running; returns the new build's id. The build runs in the background."""
    settings, builder = services.settings, services.builder
    if not settings.code_interpreter_template or builder is None:
        return None
    start = start_cmd(install_server(settings.envd_runtime_dir))
    return builtin.ensure_built(
        services, name=NAME, tag=recipe_tag(start), memory_mb=MEMORY_MB,
        request=lambda team_id: BuildRequest(team_id=team_id, steps=build_steps.parse(STEPS), from_template="base",
                                             start_cmd=start, ready_cmd=READY_CMD))

