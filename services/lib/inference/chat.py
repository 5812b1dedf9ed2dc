"""OpenAI chat messages (+ tools) -> the prompt text the model expects.

The tokenizer's chat template renders the conversation. When the template knows about tools
(Qwen2.5 and the like), it also renders the tool definitions, the assistant's earlier tool calls and
the tool results. Otherwise the Hermes/Qwen convention is written in: the tools in a system prompt
inside <tools></tools>, earlier calls as <tool_call>{...}</tool_call> text, results as
<tool_response> user turns — the same format tool_calls.py parses back.

tool_choice "required" or a named function is enforced by starting the answer with the opening of a
call (the forced prefix), so the model can only continue with one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from contracts.openai import ChatMessage, NamedToolChoice, Tool
from services.lib.inference.params import InvalidParameter
from services.lib.inference.tool_calls import CLOSE, OPEN

FALLBACK_TEMPLATE = (   # ChatML, for tokenizers without a template
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

HERMES_TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


@dataclass(frozen=True)
class Prompt:
    text: str                 # rendered prompt, including the forced prefix
    forced_prefix: str        # start of the answer we wrote for the model ("" usually)
    tools_enabled: bool       # whether the output should be parsed for tool calls


def _template(tokenizer) -> str:
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default") or next(iter(template.values()))
    return template or FALLBACK_TEMPLATE


def template_supports_tools(tokenizer) -> bool:
    return "tools" in _template(tokenizer)


def _text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise InvalidParameter(f"messages[{index}].content[{j}]",
                                   f"content parts of type {part.type!r} are not supported; only 'text'")
        parts.append(part.text)
    return "".join(parts)


def _calls(message: ChatMessage, index: int) -> list[dict]:
    calls = []
    for j, call in enumerate(message.tool_calls or []):
        try:
            args = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
        except json.JSONDecodeError:
            raise InvalidParameter(f"messages[{index}].tool_calls[{j}].function.arguments",
                                   "function arguments must be a JSON object encoded as a string") from None
        calls.append({"id": call.id, "type": "function",
                      "function": {"name": call.function.name, "arguments": args}})
    return calls


def _as_dicts(messages: list[ChatMessage]) -> list[dict]:
    out = []
    for i, message in enumerate(messages):
        item: dict = {"role": "system" if message.role == "developer" else message.role,
                      "content": _text(message, i)}
        if message.role == "assistant" and message.tool_calls:
            item["tool_calls"] = _calls(message, i)
        if message.role == "tool":
            item["tool_call_id"] = message.tool_call_id
        if message.name:
            item["name"] = message.name
        out.append(item)
    return out


def _hermes(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """Tool conversation written as plain ChatML turns (templates without tool support)."""
    out: list[dict] = []
    if tools:
        prompt = HERMES_TOOLS_PROMPT.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if messages and messages[0]["role"] == "system":
            prompt = messages[0]["content"] + "\n\n" + prompt
            messages = messages[1:]
        out.append({"role": "system", "content": prompt})
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "assistant" and message.get("tool_calls"):
            calls = "\n".join(
                f"{OPEN}\n" + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                                         ensure_ascii=False) + f"\n{CLOSE}"
                for c in message["tool_calls"])
            out.append({"role": "assistant", "content": (content + "\n" if content else "") + calls})
        elif role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append({"role": role, "content": content})
    return [{k: v for k, v in m.items() if not k.startswith("_")} for m in out]


def _forced_prefix(tool_choice, tools: list[Tool]) -> str:
    # As far into the JSON as we know it: small models follow a started object far better than
    # the instructions (arguments are always an object in the OpenAI API).
    if tool_choice == "required":
        return f'{OPEN}\n{{"name": "'
    if isinstance(tool_choice, NamedToolChoice):
        name = tool_choice.function.name
        if name not in {t.function.name for t in tools}:
            raise InvalidParameter("tool_choice", f"tool_choice names function {name!r}, which is not in tools")
        return f'{OPEN}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {{'
    return ""


def render_prompt(tokenizer, messages: list[ChatMessage], *, tools: list[Tool] | None = None,
                  tool_choice=None) -> Prompt:
    if tool_choice not in (None, "none", "auto") and not tools:
        raise InvalidParameter("tool_choice", "tool_choice other than 'none'/'auto' requires tools")
    use_tools = bool(tools) and tool_choice != "none"
    tool_dicts = [t.model_dump(exclude_none=True) for t in tools] if use_tools else None
    history = _as_dicts(messages)
    template = _template(tokenizer)
    try:
        if template_supports_tools(tokenizer):
            text = tokenizer.apply_chat_template(history, tools=tool_dicts, chat_template=template,
                                                 add_generation_prompt=True, tokenize=False)
        else:
            text = tokenizer.apply_chat_template(_hermes(history, tool_dicts), chat_template=template,
                                                 add_generation_prompt=True, tokenize=False)
    except Exception as exc:   # jinja raises for conversations a template refuses (e.g. role order)
        raise InvalidParameter("messages", f"the model's chat template rejected the messages: {exc}") from exc
    prefix = _forced_prefix(tool_choice, tools or []) if use_tools else ""
    return Prompt(text + prefix, prefix, use_tools)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt (the template already wrote any BOS)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]
