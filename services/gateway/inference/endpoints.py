"""What differs between the OpenAI endpoints the gateway relays (chat, legacy completions); the call path
itself (services.gateway.inference.chat) is one and the same for all of them.

An endpoint says where an instance answers it, how its body is checked, which text content moderation
reads from the request and from the answer (``messages`` and ``message.content``/``delta.content``, or
``prompt`` and ``text``), what a call can cost at most (the free quota's reservation) and its GenAI
operation name in traces and metrics.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from contracts.openai import ChatCompletionRequest, CompletionRequest
from services.gateway.inference.moderation import message_text
from services.gateway.quotas.calls import CallBound, call_bound
from services.lib.readmodels.serving_refs import ServiceRef


@dataclass(frozen=True)
class Endpoint:
    path: str                                     # on the instance
    request: type[BaseModel]                      # the body's contract (types and required fields)
    operation: str                                # gen_ai.operation.name
    input_param: str                              # the field a moderation refusal names
    # The request's text for content moderation, and its token-id prompts (decoded by an instance first).
    input_text: Callable[[dict], tuple[str, list[list[int]]]]
    answer_text: Callable[[dict], object]         # a response choice's text
    piece_text: Callable[[dict], object]          # a stream chunk choice's new text
    bound: Callable[[dict, BaseModel, ServiceRef], CallBound]
    input_messages: Callable[[dict], list]        # the request as GenAI input messages (telemetry)


def _chat_piece(choice: dict):
    return (choice.get("delta") or {}).get("content")


CHAT = Endpoint(
    path="/v1/chat/completions", request=ChatCompletionRequest, operation="chat", input_param="messages",
    input_text=lambda body: (message_text(body["messages"]), []),
    answer_text=lambda choice: (choice.get("message") or {}).get("content"), piece_text=_chat_piece,
    bound=call_bound, input_messages=lambda body: body.get("messages"))


# -- legacy completions -------------------------------------------------------------------------------

def prompt_items(prompt) -> list:
    """The prompts of a completions body: strings and token-id lists (as contracts.openai admits them)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    return list(prompt) if isinstance(prompt, list) else []


def completion_bound(body: dict, request: CompletionRequest, service: ServiceRef) -> CallBound:
    """As call_bound: a text prompt has at most as many tokens as UTF-8 bytes (+1 for a BOS), a token-id
    prompt exactly its ids; every prompt gets ``n`` choices."""
    items = prompt_items(body.get("prompt"))
    max_tokens = max(1, min(request.resolved_max_tokens(), service.max_model_len))
    room = max(1, service.max_model_len - request.resolved_max_tokens())
    prompt = sum(min(len(p.encode()) + 1 if isinstance(p, str) else len(p), room) for p in items)
    return CallBound(prompt=max(1, prompt), max_tokens=max_tokens, n=max(1, request.n) * max(1, len(items)))


def _prompt_text(body: dict) -> tuple[str, list[list[int]]]:
    items = prompt_items(body.get("prompt"))
    return "\n".join(p for p in items if isinstance(p, str)), [p for p in items if not isinstance(p, str)]


COMPLETIONS = Endpoint(
    path="/v1/completions", request=CompletionRequest, operation="text_completion", input_param="prompt",
    input_text=_prompt_text,
    answer_text=lambda choice: choice.get("text"), piece_text=lambda choice: choice.get("text"),
    bound=completion_bound,
    input_messages=lambda body: [{"role": "user", "content": p} for p in prompt_items(body.get("prompt"))
                                 if isinstance(p, str)])

