"""Bits shared by the Connect services: error mapping, user selection, path resolution."""

from __future__ import annotations

import os
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from sandlot.protocol.auth import basic_auth_username

from . import users
from .state import EnvdState

DEFAULT_KEEPALIVE = 90.0


def error(kind: str, message: str) -> ConnectError:
    return ConnectError(Code(kind), message)


def request_user(state: EnvdState, ctx: RequestContext[Any, Any]) -> users.User:
    """The user named by Basic auth, else the default user; unknown → unauthenticated."""
    name = basic_auth_username(ctx.request_headers.get("authorization"))
    name = name or state.default_user
    try:
        return users.lookup(name)
    except users.UnknownUser:
        raise error("unauthenticated", f"invalid username: '{name}'") from None


def keepalive_interval(ctx: RequestContext[Any, Any]) -> float:
    raw = ctx.request_headers.get("keepalive-ping-interval")
    try:
        value = float(raw) if raw else DEFAULT_KEEPALIVE
    except ValueError:
        return DEFAULT_KEEPALIVE
    return value if value > 0 else DEFAULT_KEEPALIVE


def resolve_path(path: str, user: users.User, default_dir: str) -> str:
    """envd's ExpandAndResolve: ``~`` → home, relative → under home, empty → default dir."""
    if not path:
        return default_dir
    if path == "~" or path.startswith("~/"):
        path = user.home + path[1:]
    elif not path.startswith("/"):
        path = os.path.join(user.home, path)
    return os.path.normpath(path)
