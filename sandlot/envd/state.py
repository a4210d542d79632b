"""Mutable envd configuration set by SANDLOT_ENVD_INIT at start-up and by POST /init."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from . import users

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class EnvdState:
    env_vars: dict[str, str] = field(default_factory=dict)
    access_token: str | None = None
    default_user: str = "root"
    default_workdir: str | None = None

    def apply_init(self, body: dict[str, Any]) -> None:
        """Apply an /init body; idempotent, env vars are replaced wholesale."""
        if isinstance(body.get("envVars"), dict):
            self.env_vars = {str(k): str(v) for k, v in body["envVars"].items()}
        if body.get("accessToken"):
            self.access_token = str(body["accessToken"])
        if body.get("defaultUser"):
            self.default_user = str(body["defaultUser"])
        if body.get("defaultWorkdir"):
            self.default_workdir = str(body["defaultWorkdir"])

    def resolve_user(self, name: str | None) -> users.User:
        return users.lookup(name or self.default_user)

    def default_cwd(self, user: users.User) -> str:
        """defaultWorkdir applies to the default user only, and only if it exists."""
        wd = self.default_workdir
        if wd and user.name == self.default_user and os.path.isdir(wd):
            return wd
        return user.home

    def child_env(self, user: users.User, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of a spawned process: never envd's own (PYTHONHOME etc.)."""
        env = {
            "PATH": DEFAULT_PATH,
            "HOME": user.home,
            "USER": user.name,
            "LOGNAME": user.name,
            "SHELL": user.shell,
        }
        env.update(self.env_vars)
        if extra:
            env.update(extra)
        return env
