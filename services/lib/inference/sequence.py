"""One generated sequence (a choice) and what a request receives from the scheduler."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from services.lib.inference.grammar import Matcher
from services.lib.inference.logprobs import TokenLogprob
from services.lib.inference.params import SamplingParams
from services.lib.inference.sampling import TokenHistory
from services.lib.inference.textstream import TextStream

log = logging.getLogger(__name__)


@dataclass
class ChoiceDelta:
    """New output of one choice since the previous update."""
    index: int
    text: str
    finished: bool = False
    finish_reason: str | None = None     # "stop" | "length" | "abort"
    stop_reason: str | None = None       # the stop string that ended it, as vLLM reports
    completion_tokens: int = 0
    token_ids: list[int] | None = None   # all generated ids, on the finishing delta only
    logprobs: list[TokenLogprob] | None = None   # of the tokens since the previous delta (when asked)


@dataclass
class Update:
    """What the scheduler hands a request after an iteration."""
    choices: list[ChoiceDelta]
    prompt_tokens: int
    finished: bool = False
    error: str | None = None
    # On a request's first update when it asked for them: one per prompt token, None for the first
    # (nothing precedes it).
    prompt_logprobs: list[TokenLogprob | None] | None = None
    cached_tokens: int = 0   # of the prompt's, taken from the prefix cache (usage.prompt_tokens_details)


@dataclass
class Sequence:
    index: int
    slot: int | None
    stream: TextStream
    history: TokenHistory | None
    rng: np.random.Generator | None
    grammar: Matcher | None = None     # the constraint its tokens follow (response_format, tool calls)
    logprobs: list[TokenLogprob] | None = None   # one per token when the request asks for logprobs
    logprobs_sent: int = 0
    tokens: list[int] = field(default_factory=list)
    pending: int | None = None         # generated but not yet fed to the model
    cum_logprob: float = 0.0
    finish_reason: str | None = None
    reported: bool = False             # its finish went out to the caller

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token: int, *, params: SamplingParams, eos_ids: frozenset[int],
               room: int) -> None:
        """Record a generated token and decide whether the sequence ends here.

        ``room``: how many more tokens the KV cache can take after this one.
        """
        self.tokens.append(token)
        if self.history is not None:
            self.history.add(token)
        if self.grammar is not None and not self.grammar.accept(token):
            # Cannot happen (the mask allowed only what the grammar accepts): end it rather than emit
            # output that breaks the promised format.
            log.error("grammar refused token %d that its own mask allowed", token)
            self.finish_reason = "abort"
        elif token in eos_ids and (not params.ignore_eos or self.grammar is not None):
            # Under a grammar EOS is allowed only once the value is complete: it always ends it.
            self.finish_reason = "stop"
        elif self.stream.push(token):
            self.finish_reason = "stop"
        elif len(self.tokens) >= params.max_tokens or room <= 0:
            self.finish_reason = "length"
        self.pending = None if self.finished else token
        if self.finished:
            self.stream.flush()

    def delta(self, *, final_text: bool = False) -> ChoiceDelta:
        text = self.stream.take(final=self.finished or final_text)
        logprobs = None
        if self.logprobs is not None and (text or self.finished or final_text):
            # They go out with the text they produced (text held back for a stop string or a split
            # character waits, and so do its tokens' logprobs), the rest with the finish.
            logprobs = self.logprobs[self.logprobs_sent:]
            self.logprobs_sent = len(self.logprobs)
        return ChoiceDelta(index=self.index, text=text,
                           finished=self.finished, finish_reason=self.finish_reason,
                           stop_reason=self.stream.stop_reason, completion_tokens=len(self.tokens),
                           token_ids=list(self.tokens) if self.finished else None, logprobs=logprobs)
