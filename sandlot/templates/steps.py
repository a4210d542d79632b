"""Build steps of ``TemplateBuildStartV2``: validation, the config they carry, cache keys.

Every step becomes one layer whose cache key is the hash of the parent layer's key,
the step itself and its files hash (for COPY also the sha256 of the archive's bytes), so an unchanged prefix of a build is reused
and a changed step invalidates exactly the steps after it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import Any

FILES_HASH = re.compile(r"^[0-9a-f]{64}$")
ALIASES = {"ADD": "COPY", "ARG": "ENV"}
KINDS = {"RUN", "COPY", "ENV", "WORKDIR", "USER"}
USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$|^[0-9]+$")


class StepError(ValueError):
    """A step the server cannot accept (answered with 400 before the build starts)."""


@dataclass(frozen=True)
class Step:
    number: int
    """1-based, as the SDK maps ``reason.step`` to the user's stack trace."""
    kind: str
    args: tuple[str, ...]
    files_hash: str | None = None
    force: bool = False

    def describe(self) -> str:
        shown = " ".join(a for a in self.args if a)
        return f"{self.kind} {shown}".strip()


@dataclass(frozen=True)
class BuildConfig:
    """What earlier steps decided for later ones and for sandboxes: ENV, USER, WORKDIR."""

    env: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    workdir: str = "/"

    def as_json(self) -> dict[str, Any]:
        return {"env": self.env, "user": self.user, "workdir": self.workdir}


def parse(raw_steps: list[dict[str, Any]]) -> list[Step]:
    steps = []
    for number, raw in enumerate(raw_steps, start=1):
        kind = str(raw.get("type", "")).upper()
        kind = ALIASES.get(kind, kind)
        args = tuple(str(a) for a in (raw.get("args") or []))
        if kind not in KINDS:
            raise StepError(f"Step {number}: unsupported step type '{raw.get('type')}' (supported: RUN, COPY, ADD, ENV, ARG, WORKDIR, USER)")
        files_hash = raw.get("filesHash")
        if kind == "COPY":
            if len(args) < 2 or not args[0] or not args[1]:
                raise StepError(f"Step {number}: COPY needs a source and a destination")
            if not isinstance(files_hash, str) or not FILES_HASH.match(files_hash):
                raise StepError(f"Step {number}: COPY needs a filesHash (64 lowercase hex characters)")
            if len(args) > 3 and args[3] and not re.match(r"^[0-7]{3,4}$", args[3]):
                raise StepError(f"Step {number}: COPY mode must be octal, got '{args[3]}'")
        elif kind == "RUN" and (not args or not args[0].strip()):
            raise StepError(f"Step {number}: RUN needs a command")
        elif kind == "ENV" and (not args or len(args) % 2):
            raise StepError(f"Step {number}: ENV needs key/value pairs")
        elif kind in ("WORKDIR", "USER") and (not args or not args[0]):
            raise StepError(f"Step {number}: {kind} needs an argument")
        elif kind == "USER" and not USERNAME.match(args[0]):
            raise StepError(f"Step {number}: invalid user name '{args[0]}'")
        steps.append(Step(number, kind, args, files_hash if kind == "COPY" else None, bool(raw.get("force"))))
    return steps


def apply(step: Step, config: BuildConfig) -> BuildConfig:
    """The config after ``step`` (only ENV, WORKDIR and USER change it)."""
    if step.kind == "ENV":
        pairs = dict(zip(step.args[0::2], step.args[1::2], strict=False))
        return replace(config, env={**config.env, **pairs})
    if step.kind == "WORKDIR":
        return replace(config, workdir=absolute(step.args[0], config.workdir))
    if step.kind == "USER":
        return replace(config, user=step.args[0])
    return config


def absolute(path: str, workdir: str) -> str:
    """Relative paths of steps are relative to the current WORKDIR (as in Dockerfiles)."""
    trailing = path.endswith("/") and path != "/"
    joined = posixpath.normpath(posixpath.join(workdir or "/", path))
    return joined + "/" if trailing else joined


def key(parent: str, step: Step, salt: str = "", content: str = "") -> str:
    """Cache key of the layer ``step`` makes on top of layer ``parent``.

    ``salt`` is non-empty for forced steps, so a forced rebuild gets a new key (and so
    does everything after it) and cached layers are never overwritten. ``content`` is the
    sha256 of the COPY archive the build extracts: layers are shared by every team and
    ``filesHash`` is only the uploader's claim, so the key names the bytes themselves.
    """
    fields = [parent, step.kind, list(step.args), step.files_hash or "", salt]
    if step.kind == "COPY":
        if not content:
            raise ValueError("a COPY layer's key needs the archive's sha256")
        fields.append(content)
    payload = json.dumps(fields)
    return hashlib.sha256(payload.encode()).hexdigest()


def base_key(kind: str, identity: object) -> str:
    return hashlib.sha256(json.dumps([kind, identity], sort_keys=True).encode()).hexdigest()
