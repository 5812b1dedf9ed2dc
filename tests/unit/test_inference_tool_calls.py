"""Parsing <tool_call> JSON out of model text, whole or streamed in arbitrary pieces."""
import json

import pytest

from services.lib.inference.tool_calls import Content, ParsedCall, ToolCallParser, parse_call, parse_tool_calls

ONE = '<tool_call>\n{"name": "get_delivery_date", "arguments": {"order_id": "1"}}\n</tool_call>'


def test_a_valid_call():
    content, calls = parse_tool_calls(ONE)
    assert content is None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_delivery_date", {"order_id": "1"})]
    assert calls[0].id.startswith("call_")


def test_text_before_a_call_is_content():
    content, calls = parse_tool_calls("Let me check that for you.\n" + ONE)
    assert content == "Let me check that for you." and len(calls) == 1


def test_multiple_calls_keep_their_order_and_get_distinct_ids():
    text = (ONE + "\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"巴黎\"}}\n</tool_call>")
    content, calls = parse_tool_calls(text)
    assert content is None and [c.name for c in calls] == ["get_delivery_date", "get_weather"]
    assert json.loads(calls[1].arguments) == {"city": "巴黎"} and calls[0].id != calls[1].id


def test_malformed_json_stays_plain_content():
    text = '<tool_call>\n{"name": "f", "arguments": {"a": }\n</tool_call>'
    assert parse_tool_calls(text) == (text, [])


@pytest.mark.parametrize("body", [
    '{"arguments": {}}',                      # no name
    '{"name": "", "arguments": {}}',          # empty name
    '["f", {}]',                              # not an object
    '{"name": "f", "arguments": [1, 2]}',     # arguments not an object
    '{"name": "f", "arguments": "{oops"}',    # arguments text that is not JSON
])
def test_blocks_that_are_not_calls(body):
    assert parse_call(body) is None


def test_arguments_given_as_json_text_or_as_parameters_or_missing():
    assert json.loads(parse_call('{"name": "f", "arguments": "{\\"x\\": 1}"}').arguments) == {"x": 1}
    assert json.loads(parse_call('{"name": "f", "parameters": {"x": 2}}').arguments) == {"x": 2}
    assert parse_call('{"name": "f"}').arguments == "{}"


def test_a_malformed_block_does_not_spoil_a_valid_one():
    bad = '<tool_call>{"name": oops}</tool_call>'
    content, calls = parse_tool_calls(bad + "\n" + ONE)
    assert content == bad and [c.name for c in calls] == ["get_delivery_date"]


def test_an_unclosed_block_with_complete_json_still_counts():
    content, calls = parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {"x": 1}}')
    assert content is None and calls[0].name == "f"
    content, calls = parse_tool_calls('<tool_call>\n{"name": "f", "argu')
    assert calls == [] and content == '<tool_call>\n{"name": "f", "argu'


def test_plain_text_without_tags():
    assert parse_tool_calls("Paris is the capital.") == ("Paris is the capital.", [])
    assert parse_tool_calls("a < b and <tool> is not a tag") == ("a < b and <tool> is not a tag", [])


def _stream(text: str, size: int):
    parser = ToolCallParser()
    events = []
    for i in range(0, len(text), size):
        events += parser.feed(text[i:i + size])
    return events + parser.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 1000])
def test_streaming_split_anywhere_gives_the_same_result(size):
    text = "Sure.\n" + ONE + "\n" + ONE.replace("get_delivery_date", "cancel_order") + "\nDone."
    events = _stream(text, size)
    calls = [e for e in events if isinstance(e, ParsedCall)]
    content = "".join(e.text for e in events if isinstance(e, Content))
    assert [c.name for c in calls] == ["get_delivery_date", "cancel_order"]
    assert content == "Sure.\n\n\nDone."


def test_streaming_never_leaks_a_partial_tag_as_content():
    parser = ToolCallParser()
    shown = ""
    for ch in "Hi <tool_call>{\"name\": \"f\"}</tool_call>":
        shown += "".join(e.text for e in parser.feed(ch) if isinstance(e, Content))
        assert "<" not in shown.replace("Hi ", "")
    assert shown == "Hi " and parser.calls[0].name == "f"


def test_streaming_releases_a_lookalike_that_is_not_a_tag():
    events = _stream("x <tool_cal y", 1)
    assert "".join(e.text for e in events) == "x <tool_cal y"
