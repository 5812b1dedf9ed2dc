"""Rendering OpenAI messages (and tools) into the prompt text the model expects."""
import copy
import json
from pathlib import Path

import pytest

from contracts.openai import ChatCompletionRequest
from services.lib.inference.chat import render_prompt, template_supports_tools
from services.lib.inference.params import InvalidParameter

TOOLS = [{"type": "function", "function": {
    "name": "get_delivery_date", "description": "Get the delivery date for a customer's order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]

# A minimal tool-aware template (the shape of Qwen2.5's): tools in the system turn, tool role kept.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS:"
    "{% for t in tools %}{{ t.function.name }};{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from services.lib.mlkit.tiny import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model(Path(tmp_path_factory.mktemp("tok"))))


def _request(messages, **kw):
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages, **kw})


CONVERSATION = [
    {"role": "system", "content": "You are a helpful customer support assistant."},
    {"role": "user", "content": "When does order 1 arrive?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_delivery_date", "arguments": "{\"order_id\": \"1\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "2024-09-01 18:30"},
]


def test_plain_chat_uses_the_template(tokenizer):
    req = _request([{"role": "user", "content": "hello"}])
    prompt = render_prompt(tokenizer, req.messages)
    assert prompt.text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.forced_prefix == "" and not prompt.tools_enabled


def test_content_parts_are_joined_and_images_refused(tokenizer):
    req = _request([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert "user\nab<|im_end|>" in render_prompt(tokenizer, req.messages).text
    req = _request([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(InvalidParameter) as err:
        render_prompt(tokenizer, req.messages)
    assert err.value.param == "messages[0].content[0]"


def test_hermes_fallback_renders_tools_calls_and_results(tokenizer):
    assert not template_supports_tools(tokenizer)
    req = _request(CONVERSATION, tools=TOOLS)
    prompt = render_prompt(tokenizer, req.messages, tools=req.tools, tool_choice=req.tool_choice)
    text = prompt.text
    assert prompt.tools_enabled
    # one system turn: the user's system text, then the tool definitions inside <tools>
    assert text.count("<|im_start|>system") == 1
    assert text.index("customer support assistant") < text.index("<tools>")
    tools_json = text.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(tools_json)["function"]["name"] == "get_delivery_date"
    # the earlier call as <tool_call> JSON, the result as a <tool_response> user turn
    assert '<tool_call>\n{"name": "get_delivery_date", "arguments": {"order_id": "1"}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\n2024-09-01 18:30\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_consecutive_tool_results_share_one_user_turn(tokenizer):
    conv = CONVERSATION + [{"role": "tool", "tool_call_id": "call_2", "content": "second"}]
    req = _request(conv, tools=TOOLS)
    text = render_prompt(tokenizer, req.messages, tools=req.tools).text
    assert text.count("<tool_response>") == 2 and text.count("<|im_start|>user\n<tool_response>") == 1


def test_a_tool_aware_template_renders_tools_itself(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = TOOL_TEMPLATE
    assert template_supports_tools(tok)
    req = _request(CONVERSATION, tools=TOOLS)
    text = render_prompt(tok, req.messages, tools=req.tools).text
    assert text.startswith("<|im_start|>system\nTOOLS:get_delivery_date;")
    assert 'CALL get_delivery_date {"order_id": "1"}' in text          # arguments handed over as a dict
    assert "<|im_start|>tool\n2024-09-01 18:30" in text


def test_tool_choice_none_hides_the_tools(tokenizer):
    req = _request(CONVERSATION, tools=TOOLS, tool_choice="none")
    prompt = render_prompt(tokenizer, req.messages, tools=req.tools, tool_choice=req.tool_choice)
    assert "<tools>" not in prompt.text and not prompt.tools_enabled
    assert "<tool_response>" in prompt.text    # the history is still shown


def test_required_and_named_tool_choice_force_the_start_of_a_call(tokenizer):
    req = _request(CONVERSATION[:2], tools=TOOLS, tool_choice="required")
    prompt = render_prompt(tokenizer, req.messages, tools=req.tools, tool_choice=req.tool_choice)
    assert prompt.forced_prefix == '<tool_call>\n{"name": "'
    assert prompt.text.endswith('assistant\n<tool_call>\n{"name": "')
    req = _request(CONVERSATION[:2], tools=TOOLS,
                   tool_choice={"type": "function", "function": {"name": "get_delivery_date"}})
    prompt = render_prompt(tokenizer, req.messages, tools=req.tools, tool_choice=req.tool_choice)
    assert prompt.forced_prefix == '<tool_call>\n{"name": "get_delivery_date", "arguments": {'


def test_tool_choice_errors_name_the_parameter(tokenizer):
    req = _request(CONVERSATION[:2], tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(InvalidParameter) as err:
        render_prompt(tokenizer, req.messages, tools=req.tools, tool_choice=req.tool_choice)
    assert err.value.param == "tool_choice" and "nope" in err.value.message
    req = _request(CONVERSATION[:2], tool_choice="required")
    with pytest.raises(InvalidParameter, match="requires tools"):
        render_prompt(tokenizer, req.messages, tools=req.tools, tool_choice=req.tool_choice)


def test_bad_tool_call_arguments_in_history(tokenizer):
    conv = copy.deepcopy(CONVERSATION)
    conv[2]["tool_calls"][0]["function"]["arguments"] = "{not json"
    req = _request(conv, tools=TOOLS)
    with pytest.raises(InvalidParameter) as err:
        render_prompt(tokenizer, req.messages, tools=req.tools)
    assert err.value.param == "messages[2].tool_calls[0].function.arguments"
