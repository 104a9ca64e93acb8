"""Control answers longer than a line: streamed as part lines, joined by the client."""

from __future__ import annotations

import json

import pytest

from p2pchat.control.protocol import (
    MAX_LINE,
    AnswerReader,
    ControlError,
    encode,
    encode_answer,
    result_of,
)


def test_a_short_answer_is_one_line_as_before() -> None:
    response = {"ok": True, "result": [1, 2, 3]}
    assert [encode(response)] == encode_answer(response)
    assert response == AnswerReader().feed(encode(response))


@pytest.mark.parametrize("text", ["a" * 3000, '"\\' * 1500, "\u00e9\U0001f600\n" * 1000])
def test_a_long_answer_comes_in_parts_that_each_fit_a_line(text: str) -> None:
    """Quotes and backslashes double when escaped again; non-ASCII is already escaped."""
    response = {"ok": True, "result": [{"id": i, "text": text} for i in range(400)]}
    lines = encode_answer(response)
    assert len(lines) > 1
    assert all(len(line) <= MAX_LINE and line.endswith(b"\n") for line in lines)
    assert all(line.count(b"\n") == 1 for line in lines)
    reader = AnswerReader()
    assert [None] * (len(lines) - 1) == [reader.feed(line) for line in lines[:-1]]
    assert response == reader.feed(lines[-1])
    assert response["result"] == result_of(response)


def test_an_answer_over_the_client_limit_fails_alone_and_the_next_one_is_read() -> None:
    big = encode_answer({"ok": True, "result": ["y" * (3 * MAX_LINE)]})
    reader = AnswerReader(limit=2 * MAX_LINE)
    for line in big[:-1]:
        assert reader.feed(line) is None
    with pytest.raises(ControlError, match="response from node too large"):
        reader.feed(big[-1])
    assert {"ok": True, "result": 7} == reader.feed(encode({"ok": True, "result": 7}))


def test_parts_cut_short_are_a_malformed_answer() -> None:
    lines = encode_answer({"ok": True, "result": ["z" * (2 * MAX_LINE)]})
    reader = AnswerReader()
    reader.feed(lines[0])
    with pytest.raises(ControlError, match="malformed control message"):
        reader.feed(encode({"ok": True, "result": 1}))
    with pytest.raises(ControlError, match="malformed"):
        AnswerReader().feed(json.dumps({"part": "{\"ok\":", "more": False}).encode())
