"""Where MCP servers live in the sandbox and how they get there: npm packages under one
prefix, each PyPI package in a venv of its own, GitHub repositories cloned.

The same shell commands install the template's preinstalled servers (a RUN step of
``sandlot/templates/mcp_gateway.py``) and, on demand, the others; so what the template
holds is exactly what an on-demand install would give. Registries are reached through the
sandbox's own internet access and trust the system CA bundle (the host's, when the server
binds it in), which Node and a venv's pip do not read by themselves.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

from sandlot.mcp_gateway.catalogue import Entry
from sandlot.mcp_gateway.config import ConfigError, GitHubSource

ROOT = Path("/opt/mcp-gateway")
NPM_PREFIX = ROOT / "npm"
PYPI_DIR = ROOT / "pypi"
GITHUB_DIR = ROOT / "github"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TLS_ENV = {"NODE_EXTRA_CA_CERTS": CA_BUNDLE, "SSL_CERT_FILE": CA_BUNDLE, "PIP_CERT": CA_BUNDLE,
           "REQUESTS_CA_BUNDLE": CA_BUNDLE}
"""Given to installs and to the servers (a fetch server must trust what ``curl`` trusts)."""
OUTPUT_TAIL = 12


def executable(entry: Entry) -> Path:
    if entry.registry == "npm":
        return NPM_PREFIX / "node_modules" / ".bin" / entry.command
    return PYPI_DIR / entry.package / "bin" / entry.command


def installed(entry: Entry) -> bool:
    if entry.registry == "npm":
        try:
            meta = json.loads((NPM_PREFIX / "node_modules" / entry.package / "package.json").read_text())
        except (OSError, ValueError):
            return False
        return meta.get("version") == entry.version and executable(entry).exists()
    marker = PYPI_DIR / entry.package / ".sandlot-installed"
    return marker.is_file() and marker.read_text().strip() == entry.spec and executable(entry).exists()


def shell_command(entries: list[Entry]) -> str:
    """One ``sh`` command that installs ``entries`` (all npm ones in one ``npm install``)."""
    parts = [f"export {k}={v}" for k, v in TLS_ENV.items()]
    npm = [shlex.quote(e.spec) for e in entries if e.registry == "npm"]
    if npm:
        parts.append(f"mkdir -p {NPM_PREFIX} && npm install --prefix {NPM_PREFIX} --no-audit --no-fund"
                     f" --no-update-notifier --loglevel=error {' '.join(npm)}")
    for e in entries:
        if e.registry == "pypi":
            venv = PYPI_DIR / e.package
            parts.append(
                f"rm -rf {venv} && python3 -m venv {venv} && {venv}/bin/pip install --no-cache-dir"
                f" --disable-pip-version-check --progress-bar off -q {' '.join(map(shlex.quote, (e.spec, *e.pins)))}"
                f" && echo {shlex.quote(e.spec)} > {venv}/.sandlot-installed")
    return " && ".join(parts)


def _run(args: list[str], deadline: float, what: str, cwd: Path | None = None, cap: float = 3600) -> None:
    timeout = min(cap, deadline - time.monotonic())
    if timeout <= 1:
        raise ConfigError(f"no time left to {what}")
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what} took longer than {timeout:.0f} s (is its host reachable from the sandbox?)")\
            from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-OUTPUT_TAIL:])
        raise ConfigError(f"{what} failed (exit {done.returncode}): {tail}")


def install(entries: list[Entry], deadline: float) -> None:
    """Install what is missing (needs the registry), before ``deadline`` (``time.monotonic``)."""
    missing = [e for e in entries if not installed(e)]
    if missing:
        names = ", ".join(e.spec for e in missing)
        _run(["sh", "-c", shell_command(missing)], deadline, f"installing {names}")


def clone(source: GitHubSource, deadline: float) -> Path:
    """The repository checked out (once) and its install command run; returns its dir."""
    repo_dir = GITHUB_DIR / source.owner / source.repo
    if not (repo_dir / ".sandlot-installed").is_file():
        repo_dir.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["rm", "-rf", str(repo_dir)], check=False)
        _run(["git", "-c", f"http.sslCAInfo={CA_BUNDLE}", "clone", "--depth", "1", "--quiet",
              source.url, str(repo_dir)], deadline, f"cloning {source.url}", cap=30)
        if source.install_cmd:
            _run(["bash", "-lc", source.install_cmd], deadline, f"running the install command of {source.url}",
                 cwd=repo_dir)
        (repo_dir / ".sandlot-installed").write_text(source.url)
    return repo_dir
