"""Sandbox lifecycle through the unmodified e2b SDK (sync and async)."""

from __future__ import annotations

import time
import uuid

import pytest
from e2b import AsyncSandbox, Sandbox, SandboxQuery
from e2b.exceptions import NotFoundException, SandboxException

pytestmark = pytest.mark.usefixtures("server")


def test_walking_skeleton_sync() -> None:
    sbx = Sandbox.create()
    try:
        result = sbx.commands.run("echo hello; whoami; pwd")
        assert result.exit_code == 0
        assert result.stdout == "hello\nuser\n/home/user\n"
        sbx.files.write("notes/a.txt", "hi")
        assert sbx.files.read("notes/a.txt") == "hi"
        assert sbx.files.read("/home/user/notes/a.txt") == "hi"
        listed = [s.sandbox_id for s in Sandbox.list().next_items()]
        assert sbx.sandbox_id in listed
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.template_id
        assert info.state.value == "running"
        assert sbx.is_running()
    finally:
        assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id)


async def test_walking_skeleton_async() -> None:
    sbx = await AsyncSandbox.create()
    try:
        result = await sbx.commands.run("echo hello; whoami; pwd")
        assert result.stdout == "hello\nuser\n/home/user\n"
        await sbx.files.write("notes/a.txt", "hi")
        assert await sbx.files.read("notes/a.txt") == "hi"
        paginator = AsyncSandbox.list()
        ids = [s.sandbox_id for s in await paginator.next_items()]
        assert sbx.sandbox_id in ids
        assert (await sbx.get_info()).sandbox_id == sbx.sandbox_id
        assert await sbx.is_running()
    finally:
        assert await sbx.kill() is True
    assert await AsyncSandbox.kill(sbx.sandbox_id) is False


def test_list_metadata_filter_and_pagination() -> None:
    tag = uuid.uuid4().hex
    created = [Sandbox.create(metadata={"suite": tag, "n": str(i)}) for i in range(3)]
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), limit=2)
        first = paginator.next_items()
        assert len(first) == 2
        assert paginator.has_next
        second = paginator.next_items()
        assert len(second) == 1
        assert not paginator.has_next
        assert paginator.next_token is None
        seen = {s.sandbox_id for s in first + second}
        assert seen == {s.sandbox_id for s in created}
        assert all(s.metadata["suite"] == tag for s in first + second)
        only = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "n": "1"})).next_items()
        assert [s.sandbox_id for s in only] == [created[1].sandbox_id]
        assert Sandbox.list(query=SandboxQuery(metadata={"suite": "nope-" + tag})).next_items() == []
    finally:
        for sbx in created:
            sbx.kill()


def test_connect_and_timeouts() -> None:
    sbx = Sandbox.create(timeout=60)
    try:
        end_before = sbx.get_info().end_at
        same = Sandbox.connect(sbx.sandbox_id, timeout=5)  # connect never shortens
        assert same.sandbox_id == sbx.sandbox_id
        assert same.commands.run("echo again").stdout == "again\n"
        assert sbx.get_info().end_at >= end_before
        sbx.set_timeout(2)  # set_timeout may shorten
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sbx.is_running():
            time.sleep(0.25)
        assert not sbx.is_running()
        with pytest.raises(NotFoundException):
            sbx.get_info()
        assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]
    finally:
        sbx.kill()


def test_connect_unknown_sandbox() -> None:
    with pytest.raises(SandboxException):
        Sandbox.connect("iunknownsandbox00000000")

