"""The host/sandbox line is a package: ``sandlot.protocol`` imports nothing else of Sandlot, and
what runs inside a sandbox (envd, the code-interpreter server) imports only what is shipped there.

envd runs from a copy of ``sandlot/envd`` + ``sandlot/protocol`` in the read-only runtime, the
code-interpreter server from a copy of ``sandlot/code_interpreter`` alone: an import of any other
``sandlot`` module would work in this checkout and fail in every sandbox.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandlot.protocol import auth as protocol_auth
from sandlot.runtime import envd_bundle

SANDLOT = Path(__file__).resolve().parents[2] / "sandlot"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SANDLOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sandlot_imports(path: Path) -> list[tuple[int, str]]:
    return _imports_in(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_in(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every ``sandlot`` import in ``source``, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # ``from pkg import name`` may name a submodule: check it as one
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "sandlot" or name.startswith("sandlot.")]


def _outside(packages: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    bad = []
    for package in packages:
        for path in sorted((SANDLOT / package).rglob("*.py")):
            for line, name in _sandlot_imports(path):
                if not any(name == a or name.startswith(a + ".") for a in allowed):
                    bad.append(f"{path.relative_to(SANDLOT.parent)}:{line} imports {name}")
    return bad


def test_protocol_imports_nothing_else_from_sandlot() -> None:
    modules = list((SANDLOT / "protocol").rglob("*.py"))
    assert any(p.name == "process_pb.py" for p in modules)  # the generated code is checked too
    assert _outside(("protocol",), ("sandlot.protocol",)) == []


def test_envd_imports_only_itself_and_protocol() -> None:
    assert _outside(("envd",), ("sandlot.envd", "sandlot.protocol")) == []


def test_code_interpreter_server_imports_only_itself() -> None:
    assert not (SANDLOT / "code_interpreter" / "template.py").exists()  # the host-side hook moved out
    assert _outside(("code_interpreter",), ("sandlot.code_interpreter",)) == []


def test_checker_sees_forbidden_imports() -> None:
    """The checks above are only as good as the import parser: absolute and relative forms."""
    source = ("from ...store import db\nimport sandlot.settings\nfrom sandlot import envd\n"
              "from . import process\nimport os\n")
    found = [name for _, name in _imports_in(source, "sandlot.protocol.gen.x", is_package=False)]
    assert found == ["sandlot.store.db", "sandlot.settings", "sandlot.envd", "sandlot.protocol.gen.process"]
    assert _outside(("protocol",), ("sandlot.protocol.auth",)) != []  # a narrower allow-list does fail


def test_envd_app_ships_the_protocol_package() -> None:
    shipped = {p.relative_to(SANDLOT).as_posix() for p in envd_bundle._app_sources()}
    for package in ("envd", "protocol"):
        for path in (SANDLOT / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert path.relative_to(SANDLOT).as_posix() in shipped
    assert "protocol/proto/process/process.proto" in shipped  # the contract travels with its code


def test_envd_starts_from_its_shipped_copy(tmp_path: Path) -> None:
    """Import envd's server from the app dir the runtime gets: every ``sandlot`` module it loads
    must come from that copy (a missing package would silently come from the checkout here)."""
    envd_bundle._copy_app(tmp_path)
    app = envd_bundle.app_dir(tmp_path)
    assert (app / "sandlot/protocol/gen/process/process_pb.py").is_file()
    probe = ("import sys, sandlot.envd.server, sandlot.envd.__main__\n"
             "print('\\n'.join(m.__file__ for n, m in sorted(sys.modules.items())"
             " if n.split('.')[0] == 'sandlot' and getattr(m, '__file__', None)))")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(app), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert any(f.endswith("sandlot/protocol/gen/process/process_pb.py") for f in files)
    assert [f for f in files if not f.startswith(str(app))] == []


@pytest.mark.parametrize("expiration", [None, 3600])
def test_signature_matches_the_sdk(expiration: int | None) -> None:
    """The front door (host) and envd compute the SDK's signature: one algorithm, in one place."""
    signature = pytest.importorskip("e2b.sandbox.signature")
    expected = signature.get_signature("/home/user/a.txt", "read", "user", "tok", expiration)
    absolute = expected["expiration"]
    assert protocol_auth.sign("/home/user/a.txt", "read", "user", "tok", absolute) == expected["signature"]


def test_basic_auth_round_trips() -> None:
    header = protocol_auth.basic_auth("user")
    assert protocol_auth.basic_auth_username(header) == "user"
    assert protocol_auth.basic_auth_username("Basic !!!") is None
    assert protocol_auth.basic_auth_username(None) is None
