"""What /v1/completions (OpenAI's legacy API) needs besides the engine: the prompts a request names, and
the legacy ``logprobs`` shape (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``)."""
from __future__ import annotations

from dataclasses import dataclass

from services.lib.inference.logprobs import TokenLogprob, TokenText
from services.lib.inference.params import InvalidParameter


@dataclass(frozen=True)
class Prompt:
    text: str          # what echo returns: the string given, or the ids decoded
    ids: list[int]


def parse_prompts(prompt, tokenizer) -> list[Prompt]:
    """The prompts of a request: a string, a list of strings, a list of token ids or a list of lists of
    token ids (as contracts.openai.CompletionRequest admits them). InvalidParameter names ``prompt``."""
    if isinstance(prompt, str):
        items = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        items = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = prompt
    else:
        raise InvalidParameter("prompt", "prompt must be a string, a list of strings, a list of token ids or "
                                         "a list of lists of token ids, and not empty")
    vocab = len(tokenizer)
    out = []
    for item in items:
        if isinstance(item, str):
            ids = tokenizer(item)["input_ids"]
            if not ids:
                raise InvalidParameter("prompt", "a prompt is empty")
            out.append(Prompt(item, list(ids)))
            continue
        if not item:
            raise InvalidParameter("prompt", "a prompt is an empty list of token ids")
        bad = next((t for t in item if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidParameter("prompt", f"prompt: {bad} is not a token id of this model (0 to {vocab - 1})")
        out.append(Prompt(tokenizer.decode(item), list(item)))
    return out


class LegacyLogprobs:
    """One choice's legacy ``logprobs``, built piece by piece (a stream sends each piece with its text):
    ``text_offset`` continues where the previous piece ended."""

    def __init__(self, token_text: TokenText, top: int):
        self.token_text, self.top = token_text, top
        self.offset = 0

    def piece(self, entries: list[TokenLogprob | None], tokens: list[int] | None = None) -> dict:
        """``entries``: one per token, None where a token has no logprob (a prompt's first): then its id
        comes from ``tokens`` (same length)."""
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for i, entry in enumerate(entries):
            token = entry.token if entry is not None else tokens[i]
            text = self.token_text(token)[0]
            out["tokens"].append(text)
            out["text_offset"].append(self.offset)
            self.offset += len(text)
            if entry is None:
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                continue
            out["token_logprobs"].append(entry.logprob)
            # The ``top`` most likely tokens, and the chosen one (as vLLM reports it).
            top = {self.token_text(t)[0]: lp for t, lp in entry.top[: self.top]}
            top.setdefault(text, entry.logprob)
            out["top_logprobs"].append(top)
        return out
