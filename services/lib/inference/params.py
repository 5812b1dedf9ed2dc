"""Sampling parameters with the guide's ranges and defaults (table 11-1, vLLM semantics).

Every rule lives here once: the HTTP server turns a request into ``SamplingParams`` and maps
``InvalidParameter`` to an OpenAI 400 error whose ``param`` names the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.lib.inference.logprobs import MAX_TOP_LOGPROBS


class InvalidParameter(ValueError):
    """A request parameter is out of range or contradicts another one."""

    def __init__(self, param: str, message: str, *, code: str = "invalid_parameter"):
        super().__init__(message)
        self.param, self.message, self.code = param, message, code


def _require(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise InvalidParameter(param, message)


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    max_tokens: int = 16                 # table 11-1 default
    temperature: float = 1.0             # 0 = greedy
    top_p: float = 1.0
    top_k: int = -1                      # -1 = all tokens
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0      # vLLM's: >1 discourages tokens already in prompt or output
    stop: tuple[str, ...] = ()
    n: int = 1
    best_of: int | None = None           # default n
    use_beam_search: bool = False
    length_penalty: float = 1.0
    ignore_eos: bool = False
    seed: int | None = None              # a generator per request: same seed, same samples
    logprobs: bool = False               # report each generated token's log-probability
    top_logprobs: int = 0                # ... and this many most likely alternatives (0-20)
    # The prompt's own tokens' log-probabilities (each given the tokens before it) with this many
    # alternatives; None: not computed. With it max_tokens may be 0: the prompt is only scored
    # (/v1/completions echo, how evaluation harnesses score a loglikelihood).
    prompt_logprobs: int | None = None
    # Text forced at the start of the completion (tool_choice "required"/named): part of the
    # output for parsing, not generated, not counted.
    forced_prefix: str = field(default="", repr=False)
    # The grammar every sequence's tokens must follow (services.lib.inference.grammar: response_format,
    # tool calls), as a spec or compiled: the output then always parses unless max_tokens cuts it.
    grammar: Any = field(default=None, repr=False, compare=False)
    # Whose prefix-cache entries the request may reuse (services.lib.inference.prefix_cache): the
    # caller's account, as the gateway says; "" for callers of the instance itself.
    cache_salt: str = field(default="", repr=False)

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is None:
            object.__setattr__(self, "stop", ())
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        self.validate()

    @property
    def width(self) -> int:
        """Sequences generated for the request: beams, or best_of samples."""
        return self.best_of if self.best_of is not None else self.n

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def penalised(self) -> bool:
        return (self.presence_penalty != 0 or self.frequency_penalty != 0
                or self.repetition_penalty != 1)

    def validate(self) -> None:
        if self.prompt_logprobs is None:
            _require(isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens",
                     f"max_tokens must be at least 1, got {self.max_tokens}")
        else:
            _require(isinstance(self.max_tokens, int) and self.max_tokens >= 0, "max_tokens",
                     f"max_tokens must be at least 0, got {self.max_tokens}")
            _require(isinstance(self.prompt_logprobs, int) and 0 <= self.prompt_logprobs <= MAX_TOP_LOGPROBS,
                     "prompt_logprobs", f"prompt_logprobs must be in [0, {MAX_TOP_LOGPROBS}], "
                     f"got {self.prompt_logprobs}")
            _require(not self.use_beam_search, "use_beam_search",
                     "prompt logprobs cannot be combined with use_beam_search")
        _require(0 <= self.temperature <= 2, "temperature",
                 f"temperature must be in [0, 2], got {self.temperature}")
        _require(0 < self.top_p <= 1, "top_p", f"top_p must be in (0, 1], got {self.top_p}")
        _require(self.top_k == -1 or self.top_k >= 1, "top_k",
                 f"top_k must be -1 (all tokens) or at least 1, got {self.top_k}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _require(-2 <= value <= 2, name, f"{name} must be in [-2, 2], got {value}")
        _require(0 < self.repetition_penalty <= 2, "repetition_penalty",
                 f"repetition_penalty must be in (0, 2], got {self.repetition_penalty}")
        _require(all(isinstance(s, str) and s for s in self.stop), "stop",
                 "stop must be a string or a list of non-empty strings")
        _require(self.n >= 1, "n", f"n must be at least 1, got {self.n}")
        _require(isinstance(self.top_logprobs, int) and 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
                 "top_logprobs", f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")
        _require(self.logprobs or not self.top_logprobs, "top_logprobs",
                 "top_logprobs requires logprobs to be true")
        if self.best_of is not None:
            _require(self.best_of >= self.n, "best_of",
                     f"best_of must be greater than or equal to n, got best_of={self.best_of} and n={self.n}")
        if self.grammar is not None:
            self._validate_grammar()
        if self.use_beam_search:
            self._validate_beam()
        else:
            if self.n > 1 or self.width > 1:
                # Guide: n > 1 needs real sampling (top_k > 1 and temperature > 0), else the
                # samples would all be the same greedy text.
                _require(self.temperature > 0, "temperature",
                         "n > 1 (or best_of > 1) requires sampling: temperature must be greater than 0")
                _require(self.top_k != 1, "top_k",
                         "n > 1 (or best_of > 1) requires sampling: top_k must be -1 or greater than 1")
            _require(self.length_penalty == 1.0, "length_penalty",
                     "length_penalty applies to beam search only: set use_beam_search to true "
                     "(with best_of > 1, top_k -1) or leave length_penalty at 1.0")

    def _validate_grammar(self) -> None:
        # A stop string can occur inside a JSON string and would cut the value short; beams would each
        # need their own grammar state, forked at every branch (not done).
        _require(not self.stop or self.grammar.stop_allowed, "stop",
                 "stop cannot be combined with response_format json_object/json_schema: a stop string "
                 "inside the JSON would cut it short (generation ends when the JSON is complete)")
        _require(not self.use_beam_search, "use_beam_search",
                 "use_beam_search cannot be combined with response_format json_object/json_schema")

    def _validate_beam(self) -> None:
        # Beams are re-ranked and forked at every step: their tokens' log-probabilities are not kept.
        _require(not self.logprobs, "logprobs", "logprobs cannot be combined with use_beam_search")
        _require(self.n > 1, "n", "use_beam_search requires n greater than 1")
        _require(self.temperature == 0, "temperature",
                 f"use_beam_search requires temperature 0.0, got {self.temperature}")
        _require(self.top_p == 1.0, "top_p", f"use_beam_search requires top_p 1.0, got {self.top_p}")
        _require(self.top_k == -1, "top_k", f"use_beam_search requires top_k -1, got {self.top_k}")
        _require(self.width > 1, "best_of", "use_beam_search requires best_of greater than 1")
