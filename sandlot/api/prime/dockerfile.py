"""Dockerfile → the template builder's steps (RUN/COPY/ENV/WORKDIR/USER) plus FROM and CMD/ENTRYPOINT.

Only what the layer builder can reproduce faithfully is accepted; anything else fails the
build with the instruction and its line number instead of being silently ignored.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from sandlot.templates.steps import Step

NO_OPS = {"LABEL", "EXPOSE", "MAINTAINER"}
"""Metadata only: nothing in a sandbox depends on them."""
CHMOD = re.compile(r"^[0-7]{3,4}$")
"""``COPY --chmod``: the octal modes the template builder's COPY steps accept (no symbolic modes)."""
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class DockerfileError(ValueError):
    """The Dockerfile cannot be built; the message names the offending line."""


@dataclass
class Plan:
    base: str = ""
    steps: list[Step] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    @property
    def start_command(self) -> dict[str, Any] | None:
        argv = self.entrypoint + self.cmd
        return {"executable": argv[0], "args": argv[1:]} if argv else None


def _lines(text: str) -> list[tuple[int, str]]:
    """Logical lines (continuations joined, comments dropped) with their first line number."""
    out: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not buffer and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buffer and line.lstrip().startswith("#"):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        out.append((start, (buffer + line).strip()))
        buffer = ""
    if buffer.strip():
        out.append((start, buffer.strip()))
    return out


def _argv(rest: str) -> list[str] | None:
    """JSON (exec) form, or None for the shell form."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return None


def _expand(text: str, args: dict[str, str]) -> str:
    return _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def _pairs(rest: str) -> list[tuple[str, str]]:
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        return [(words[0], rest.split(None, 1)[1] if len(words) > 1 else "")]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise ValueError(f"expected KEY=VALUE, got {word!r}")
        pairs.append((key, value))
    return pairs


def parse(text: str, files_hash: str) -> Plan:
    """Plan of a single-stage Dockerfile; COPY sources come from the context archive ``files_hash``."""
    plan = Plan()
    args: dict[str, str] = {}
    number = 0
    for line_no, line in _lines(text):
        instruction, _, rest = line.partition(" ")
        kind, rest = instruction.upper(), rest.strip()
        where = f"line {line_no}: {line[:120]}"

        def add(step_kind: str, *step_args: str, files: str | None = None) -> None:
            nonlocal number
            number += 1
            plan.steps.append(Step(number, step_kind, tuple(step_args), files))

        if kind == "FROM":
            if plan.base:
                raise DockerfileError(f"Multi-stage builds are not supported ({where})")
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                raise DockerfileError(f"FROM needs an image ({where})")
            if len(words) > 1:
                raise DockerfileError(f"FROM ... AS <stage> (multi-stage) is not supported ({where})")
            plan.base = _expand(words[0], args)
            continue
        if kind == "ARG":
            name, eq, default = rest.partition("=")
            if not name:
                raise DockerfileError(f"ARG needs a name ({where})")
            args[name.strip()] = default.strip().strip('"')  # build-time only: expanded, never in the image
            continue
        if not plan.base:
            raise DockerfileError(f"The Dockerfile must start with FROM ({where})")
        if kind in NO_OPS:
            continue
        if kind == "RUN":
            argv = _argv(rest)
            if rest.startswith("--"):
                raise DockerfileError(f"RUN flags (--mount, --network...) are not supported ({where})")
            command = shlex.join(argv) if argv is not None else rest
            if not command.strip():
                raise DockerfileError(f"RUN needs a command ({where})")
            add("RUN", _expand(command, args) if argv is None else command)
        elif kind in ("COPY", "ADD"):
            words = _argv(rest) or shlex.split(rest)
            owner = mode = ""
            while words and words[0].startswith("--"):
                flag, _, value = words.pop(0).partition("=")
                if flag == "--chown":
                    owner = value
                elif flag == "--chmod":
                    if not CHMOD.match(value):  # interpolated into the COPY script: octal only
                        raise DockerfileError(f"{kind} --chmod must be an octal mode such as 755 or 0644, "
                                              f"got '{value[:40]}' ({where})")
                    mode = value
                else:
                    raise DockerfileError(f"{kind} {flag} is not supported ({where})")
            if len(words) < 2:
                raise DockerfileError(f"{kind} needs a source and a destination ({where})")
            *sources, dest = [_expand(w, args) for w in words]
            if kind == "ADD" and any(re.match(r"^[a-z]+://", s) for s in sources):
                raise DockerfileError(f"ADD from a URL is not supported ({where})")
            if len(sources) > 1 and not dest.endswith("/"):
                dest += "/"
            for source in sources:
                add("COPY", source, dest, owner, mode, files=files_hash)
        elif kind == "ENV":
            try:
                pairs = _pairs(rest)
            except ValueError as exc:
                raise DockerfileError(f"ENV: {exc} ({where})") from None
            flat = [item for key, value in pairs for item in (key, _expand(value, args))]
            if not flat:
                raise DockerfileError(f"ENV needs KEY=VALUE ({where})")
            add("ENV", *flat)
        elif kind in ("WORKDIR", "USER"):
            if not rest:
                raise DockerfileError(f"{kind} needs an argument ({where})")
            value = _expand(rest, args)
            add(kind, value.split(":", 1)[0] if kind == "USER" else value)
        elif kind in ("CMD", "ENTRYPOINT"):
            exec_form = _argv(rest)
            process = exec_form if exec_form is not None else ["/bin/sh", "-c", rest]
            if kind == "CMD":
                plan.cmd = process
            else:
                plan.entrypoint = process
                plan.cmd = []
        else:
            raise DockerfileError(f"Unsupported Dockerfile instruction {kind} ({where})")
    if not plan.base:
        raise DockerfileError("The Dockerfile has no FROM instruction")
    return plan
