"""The relay's chunk-for-chunk re-framing (``http1.ChunkedPassthrough``, issue 14): chunk sizes
kept, every framing byte our own, any split of the input gives the same output."""

from __future__ import annotations

import pytest

from sandlot.proxy.http1 import ChunkedPassthrough, Unparsable

BODY = b"a;ext=1\r\n0123456789\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\nNEXT"


def _relay(pieces: list[bytes]) -> tuple[bytes, bytes, int]:
    parser = ChunkedPassthrough()
    out, pending, data = b"", b"", 0
    for piece in pieces:
        if parser.done:
            pending += piece
            continue
        buffer = pending + piece
        frames, used, n = parser.relay(buffer)
        out += b"".join(bytes(f) for f in frames)
        data += n
        pending = buffer[used:]
    return out, pending, data


@pytest.mark.parametrize("split", range(1, len(BODY)))
def test_any_split_gives_the_canonical_chunks_and_leaves_what_follows(split: int) -> None:
    out, rest, data = _relay([BODY[:split], BODY[split:]])
    assert out == b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n"
    assert rest == b"NEXT" and data == 13


def test_byte_by_byte() -> None:
    out, rest, _ = _relay([bytes([b]) for b in BODY])
    assert out == b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n" and rest == b"NEXT"


@pytest.mark.parametrize("bad", [b"zz\r\n", b"3\r\nabcX\r\n", b"1\r\na\r\n0\r\nbad trailer\r\n\r\n", b"1" * 5000])
def test_bad_framing_is_refused(bad: bytes) -> None:
    with pytest.raises(Unparsable):
        ChunkedPassthrough().relay(bad)
