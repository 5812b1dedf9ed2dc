"""What one call to a preset service reserves of the caller's free quota, and the refusals.

The gateway does not tokenize, so it reserves a bound that the call cannot exceed:

* prompt: every token of the preset models' byte-level BPE tokenizers covers at least one byte of
  the rendered prompt, so the prompt has at most as many tokens as the UTF-8 bytes of the messages
  and tools (their JSON, which is longer than their text) plus what the chat template writes around
  them (``TEMPLATE_TOKENS``: role markers, a default system prompt, the tool instructions);
* completion: ``n`` choices of at most ``max_tokens`` each; without max_tokens the instance
  generates at most 16 (the guide's default, table 11-1), so 16 is reserved, not the context;
* and the engine refuses a call whose prompt plus max_tokens exceeds the service's context, so
  the prompt part is at most ``max_model_len - max_tokens``.

The reservation is settled with the true usage after the call, so the bound only decides whether a
call may start: near the end of a quota a call is refused when its bound does not fit, even if it
would have used less. Lower max_tokens (or shorten the messages) to use the last tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from contracts.openai import ChatCompletionRequest
from services.lib.readmodels.serving_refs import ServiceRef
from services.gateway.oai_errors import OpenAIError
from services.gateway.quotas.ledger import NoRoom, NotClaimed, QuotaLedger, Reservation
from services.gateway.quotas.store import quota_id

TEMPLATE_TOKENS = 512   # what the preset chat templates add (ChatML markers, default system prompt, tools text)


@dataclass(frozen=True)
class CallBound:
    prompt: int
    max_tokens: int
    n: int

    @property
    def tokens(self) -> int:
        return self.prompt + self.n * self.max_tokens


def call_bound(body: dict, request: ChatCompletionRequest, service: ServiceRef) -> CallBound:
    """The most tokens this call can be billed (see the module's notes)."""
    max_tokens = max(1, min(request.resolved_max_tokens(), service.max_model_len))
    text = json.dumps([body.get("messages"), body.get("tools")], ensure_ascii=False)
    prompt = min(len(text.encode()) + TEMPLATE_TOKENS, max(1, service.max_model_len - max_tokens))
    return CallBound(prompt=prompt, max_tokens=max_tokens, n=max(1, request.n))


async def reserve(ledger: QuotaLedger, *, user_id: str, service: ServiceRef, bound: CallBound) -> Reservation:
    """Hold the call's bound on the caller's free quota of ``service``, or refuse the call."""
    try:
        return await ledger.reserve(quota_id(user_id, service.id), bound.tokens)
    except NotClaimed:
        raise OpenAIError(403, f"Claim the free quota of the preset service '{service.name}' first "
                          f"(POST /api/v1/preset-services/{service.id}/claim).", code="quota_not_claimed") from None
    except NoRoom as exc:
        raise _insufficient(service, bound, exc) from None
    except OpenAIError:
        raise
    except Exception as exc:   # MongoDB unreachable: a call cannot be let through unreserved
        raise OpenAIError(503, f"The free quota of '{service.name}' cannot be checked right now; try again "
                          "shortly.", code="quota_unavailable", retry_after=1) from exc


def _insufficient(service: ServiceRef, bound: CallBound, refusal: NoRoom) -> OpenAIError:
    b = refusal.balance
    if b.used >= b.granted:
        message = (f"The free quota of '{service.name}' ({b.granted} tokens) is used up ({b.used} used). "
                   "Deploy the model as your own service to keep using it.")
    else:
        message = (f"The free quota of '{service.name}' cannot cover this call: it may use up to {bound.tokens} "
                   f"tokens ({bound.prompt} for the messages, {bound.n} x max_tokens {bound.max_tokens} for the "
                   f"answer) and {b.left} of {b.granted} are left ({b.used} used, {b.reserved} held by calls "
                   "in progress). Lower max_tokens or shorten the messages, or deploy the model as your own "
                   "service to keep using it.")
    return OpenAIError(429, message, code="insufficient_quota", type="insufficient_quota")
