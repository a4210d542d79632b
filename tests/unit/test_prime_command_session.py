"""Prime's CommandSession messages ↔ envd's process messages, field by field (no sandbox needed)."""

from __future__ import annotations

import pytest
from connectrpc.errors import ConnectError
from protobuf import Oneof

from sandlot.api.prime import command_session as cs
from sandlot.api.prime.gen.command_session import command_session_pb as cpb
from sandlot.protocol.gen.process import process_pb as ppb


def test_selector_maps_session_uuid_to_envd_tag() -> None:
    assert cs._selector(cpb.CommandSessionSelector(selector=Oneof("pid", 7))) == ppb.ProcessSelector(
        selector=Oneof("pid", 7))
    assert cs._selector(cpb.CommandSessionSelector(selector=Oneof("session_uuid", "u-1"))) == ppb.ProcessSelector(
        selector=Oneof("tag", "u-1"))
    for missing in (None, cpb.CommandSessionSelector()):
        with pytest.raises(ConnectError, match="session selector"):
            cs._selector(missing)


@pytest.mark.parametrize("arm", ["stdin", "pty"])
def test_input_keeps_its_arm(arm: str) -> None:
    assert cs._input(cpb.CommandInput(input=Oneof(arm, b"x\n"))) == ppb.ProcessInput(input=Oneof(arm, b"x\n"))
    assert cs._input(cpb.CommandInput()) is None
    assert cs._input(None) is None


def test_events_translate_every_arm() -> None:
    E, P = cpb.CommandSessionEvent, ppb.ProcessEvent
    assert cs._event(P(event=Oneof("start", P.StartEvent(pid=42)))) == E(event=Oneof("start", E.StartEvent(pid=42)))
    for stream in ("stdout", "stderr", "pty"):
        got = cs._event(P(event=Oneof("data", P.DataEvent(output=Oneof(stream, b"out")))))
        assert got == E(event=Oneof("data", E.DataEvent(output=Oneof(stream, b"out"))))
    end = P.EndEvent(exit_code=3, exited=True, status="exit status 3", error="boom")
    assert cs._event(P(event=Oneof("end", end))) == E(event=Oneof("end", E.EndEvent(
        exit_code=3, exited=True, status="exit status 3", error="boom")))
    assert cs._event(P(event=Oneof("keepalive", P.KeepAlive()))) == E(event=Oneof("keepalive", E.KeepAlive()))
    assert cs._event(P()) is None and cs._event(None) is None
    # the translated message is what goes on the wire: it serialises and parses back
    sent = cs._event(P(event=Oneof("data", P.DataEvent(output=Oneof("stderr", b"\xff")))))
    assert sent is not None
    assert E.from_binary(sent.to_binary()) == E(event=Oneof("data", E.DataEvent(output=Oneof("stderr", b"\xff"))))
