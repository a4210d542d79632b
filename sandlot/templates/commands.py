"""Shell scripts that carry out COPY, WORKDIR and USER inside a build sandbox.

They use only POSIX sh and coreutils/busybox applets, so they work in images
without bash or Python.
"""

from __future__ import annotations

import posixpath
import shlex

CONTEXT_MOUNT = "/.sandlot-context"


def copy_script(sources: list[str], dest: str, owner: str, mode: str) -> str:
    """Docker COPY semantics: a directory's *contents* are copied; several sources or a
    trailing ``/`` mean ``dest`` is a directory."""
    to_dir = dest.endswith("/") or len(sources) > 1
    dest = dest.rstrip("/") or "/"
    lines = ["set -e", f"cd {CONTEXT_MOUNT}", f"dest={shlex.quote(dest)}",
             f'if [ -d "$dest" ]; then to_dir=1; else to_dir={int(to_dir)}; fi']
    for src in sources:
        q = shlex.quote(src)
        lines.append(
            f'if [ -d {q} ] && [ ! -L {q} ]; then mkdir -p "$dest"; cp -a {q}/. "$dest"/; target="$dest"; '
            f'elif [ "$to_dir" = 1 ]; then mkdir -p "$dest"; cp -a {q} "$dest"/; target="$dest"/{shlex.quote(posixpath.basename(src))}; '
            f'else mkdir -p "$(dirname "$dest")"; cp -a {q} "$dest"; target="$dest"; fi'
        )
        if owner:
            lines.append(f'chown -R {shlex.quote(owner)} "$target"')
        if mode:
            lines.append(f'if [ -d "$target" ] && [ ! -L "$target" ]; then find "$target" -type f -exec chmod {mode} {{}} +; '
                         f'else chmod {mode} "$target"; fi')
    return "\n".join(lines)


def workdir_script(path: str, user: str) -> str:
    q = shlex.quote(path)
    chown = f"chown {shlex.quote(user)} {q} 2>/dev/null || true; " if user != "root" else ""
    return f"[ -d {q} ] || {{ mkdir -p {q}; {chown}}}"


def user_script(name: str, sudo: bool) -> str:
    """Create the user like E2B (home dir, bash if present); ``sudo`` adds a sudoers entry."""
    q = shlex.quote(name)
    script = (
        f"set -e; if ! id {q} >/dev/null 2>&1; then "
        f"sh_=/bin/sh; [ -x /bin/bash ] && sh_=/bin/bash; "
        f"if command -v useradd >/dev/null 2>&1; then useradd --create-home --shell $sh_ {q}; "
        f"else adduser -D -s $sh_ {q}; fi; fi"
    )
    if sudo:
        script += (f"; mkdir -p /etc/sudoers.d; echo {shlex.quote(name + ' ALL=(ALL:ALL) NOPASSWD: ALL')} "
                   f"> /etc/sudoers.d/{q}; chmod 0440 /etc/sudoers.d/{q}")
    return script

