"""The inference engine: one model, one scheduler thread, many concurrent requests.

Continuous batching: every iteration the scheduler admits waiting requests into free KV-cache slots
(one prefill each), then runs ONE decode step for all live sequences of all requests together.
Decode is bound by reading the weights, so a step for 8 sequences costs little more than for one
(benchmarks/bench_decode.py). onnxruntime releases the GIL while it runs, so the server's event
loop keeps serving meanwhile. A prompt that starts like an earlier prompt or answer takes their keys
and values from the prefix cache and prefills only the rest (``prefix_cache``).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from services.lib.inference import cpu_priority
from services.lib.inference.beam import Beam, BeamSearch
from services.lib.inference.grammar import Grammars, JsonGrammar, ToolGrammar
from services.lib.inference.kv_concat import ConcatBackend
from services.lib.inference.kv_gqa import GqaBackend
from services.lib.inference.logprobs import TokenLogprob, token_logprob
from services.lib.inference.model_files import context_length, eos_token_ids, plan_model
from services.lib.inference.params import InvalidParameter, SamplingParams
from services.lib.inference.prefix_cache import DEFAULT_BLOCK_SIZE, DEFAULT_PREFIX_CACHE_BYTES, PrefixCache
from services.lib.inference.providers import select_providers
from services.lib.inference.sampling import TokenHistory, apply_penalties, choose_token, make_rngs
from services.lib.inference.sequence import ChoiceDelta, Sequence, Update
from services.lib.inference.textstream import TextStream

log = logging.getLogger(__name__)

DEFAULT_MAX_NUM_SEQS = 16


@dataclass
class Choice:
    index: int
    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | None = None
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None   # one per generated token, when the request asked


@dataclass
class Completion:
    choices: list[Choice]
    prompt_tokens: int
    prompt_logprobs: list[TokenLogprob | None] | None = None   # when the request asked (params.prompt_logprobs)
    cached_tokens: int = 0   # of the prompt, whose keys and values came from the prefix cache

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)

    @property
    def text(self) -> str:
        return self.choices[0].text


class EngineError(RuntimeError):
    """The model failed while running a request (not the caller's fault)."""


@dataclass(eq=False)
class _Request:
    id: int
    prompt: np.ndarray
    params: SamplingParams
    sink: Callable[[Update], None]
    slots: list[int] = field(default_factory=list)
    seqs: list[Sequence] = field(default_factory=list)
    beam: BeamSearch | None = None
    cancelled: bool = False
    prompt_logprobs: list[TokenLogprob | None] | None = None   # computed at the prefill, sent with the first update
    cached_tokens: int = 0   # prompt tokens found in the prefix cache (not computed again)

    @property
    def streams(self) -> bool:
        """Whether text can go out as it is generated (not when candidates are ranked at the end)."""
        return self.beam is None and self.params.width == self.params.n

    @property
    def done(self) -> bool:
        return self.beam.done if self.beam is not None else all(s.finished for s in self.seqs)


class RequestHandle:
    def __init__(self, engine: Engine, request: _Request):
        self._engine, self._request = engine, request

    def cancel(self) -> None:
        self._request.cancelled = True
        self._engine._wake()

    @property
    def cancelled(self) -> bool:
        return self._request.cancelled


class UpdateStream:
    """The updates of one submitted request, read from an asyncio loop; ends after the finished one."""

    def __init__(self, engine: Engine, prompt_ids, params: SamplingParams):
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Update] = asyncio.Queue()
        self._ended = False
        self._handle = engine.submit(prompt_ids, params, lambda u: loop.call_soon_threadsafe(self._queue.put_nowait, u))

    def __aiter__(self) -> UpdateStream:
        return self

    async def __anext__(self) -> Update:
        if self._ended:
            raise StopAsyncIteration
        update = await self._queue.get()
        if update.error:
            self._ended = True
            raise EngineError(update.error)
        self._ended = update.finished
        return update

    def cancel(self) -> None:
        """Stop generating for this request (no effect once it has finished)."""
        self._handle.cancel()

    @property
    def cancelled(self) -> bool:
        return self._handle.cancelled


class Engine:
    def __init__(self, model_dir: Path, *, max_model_len: int | None = None,
                 max_num_seqs: int = DEFAULT_MAX_NUM_SEQS, providers: list[str] | None = None,
                 threads: int | None = None, spinning: bool | None = False,
                 compute_niceness: int = cpu_priority.DEFAULT_COMPUTE_NICENESS,
                 prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES, prefix_block_size: int = DEFAULT_BLOCK_SIZE):
        """``spinning``: let onnxruntime's idle threads busy-wait (None: its default, which is on).
        Off by default: the scheduler thread and the HTTP loop need the cores between runs.
        ``compute_niceness``: how much lower than the caller's the CPU priority of the scheduler
        thread and of onnxruntime's threads is (0: the same); see ``cpu_priority``.
        ``prefix_cache_bytes``: memory for the KV cache of earlier prompts and answers that later
        prompts starting alike reuse (0: off); see ``prefix_cache``."""
        self.prefix_cache = PrefixCache(capacity_bytes=prefix_cache_bytes, block_size=prefix_block_size)
        self.model_dir = Path(model_dir)
        plan = plan_model(self.model_dir, providers=providers or select_providers())
        from transformers import AutoTokenizer

        self.onnx_dir = plan.onnx_dir
        self.tokenizer = AutoTokenizer.from_pretrained(plan.onnx_dir)
        # A second instance for the scheduler thread's incremental decoding: a fast tokenizer used
        # from two threads at once can fail with "Already borrowed" (its Rust state is borrowed
        # mutably while encoding).
        self._detokenizer = AutoTokenizer.from_pretrained(plan.onnx_dir)
        limit = context_length(plan.onnx_dir) or context_length(self.model_dir) or 2048
        if max_model_len is not None and max_model_len > limit:
            raise ValueError(f"--max-model-len {max_model_len} exceeds the model's context length {limit}")
        self.max_model_len = max_model_len or limit
        self.max_num_seqs = max_num_seqs
        if plan.backend == "gqa":
            build = partial(GqaBackend, plan.onnx_dir, max_slots=max_num_seqs, max_len=self.max_model_len,
                            threads=threads, spinning=spinning)
        else:
            build = partial(ConcatBackend, plan.onnx_dir, max_slots=max_num_seqs, max_len=self.max_model_len,
                            providers=plan.providers, threads=threads, spinning=spinning)
        self.compute_niceness = compute_niceness
        self.backend = cpu_priority.on_lowered_thread(build, by=compute_niceness)
        self.max_model_len = min(self.max_model_len, self.backend.max_len)
        self.vocab_size = self.backend.vocab_size or len(self.tokenizer)
        self.eos_ids = eos_token_ids(plan.onnx_dir, self.tokenizer)
        # response_format and tool calls: grammars over this vocabulary (the logits' width, which may exceed the
        # tokenizer's); EOS is what a complete value may end with. A tokenizer of their own: they
        # read the vocabulary on a worker thread while the loop's tokenizer encodes prompts.
        self.grammars = Grammars(partial(AutoTokenizer.from_pretrained, plan.onnx_dir),
                                 vocab_size=self.vocab_size, stop_ids=self.eos_ids)
        log.info("engine: %s with %s on %s (max_model_len %d, %d slots)", plan.onnx_dir,
                 self.backend.name, self.backend.providers, self.max_model_len, max_num_seqs)

        self._free = list(range(max_num_seqs))
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._loop, name="inference-scheduler", daemon=True)
        self._thread.start()

    # -- public API -----------------------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def providers(self) -> list[str]:
        return list(self.backend.providers)

    def requests(self) -> dict[str, int]:
        """How many requests are being generated and how many wait for a slot."""
        with self._cond:
            return {"running": len(self._running), "waiting": len(self._waiting)}

    def check(self, prompt_ids, params: SamplingParams) -> None:
        """Raise InvalidParameter when this request cannot run on this instance."""
        n_prompt = len(prompt_ids)
        if n_prompt == 0:
            raise InvalidParameter("messages", "the prompt is empty")
        if params.width > self.max_num_seqs:
            which = "best_of" if params.best_of is not None else "n"
            raise InvalidParameter(which, f"{which} must be at most {self.max_num_seqs} on this instance "
                                          f"(its number of sequence slots), got {params.width}")
        if n_prompt + params.max_tokens > self.max_model_len:
            raise InvalidParameter(
                "messages" if n_prompt >= self.max_model_len else "max_tokens",
                f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                f"requested {n_prompt + params.max_tokens} tokens ({n_prompt} in the messages, "
                f"{params.max_tokens} in the completion). Please reduce the length of the messages "
                "or completion.", code="context_length_exceeded")

    def submit(self, prompt_ids, params: SamplingParams, sink: Callable[[Update], None]) -> RequestHandle:
        """Queue a request; ``sink`` receives its updates on the scheduler thread.

        A grammar given as a spec (``JsonGrammar``, ``ToolGrammar``) is compiled here, in the caller's
        thread (the server compiles it beforehand, off its event loop: ``compile_grammar``)."""
        self.check(prompt_ids, params)
        params = self.compile_grammar(params)
        request = _Request(next(self._ids), np.asarray(prompt_ids, dtype=np.int64), params, sink)
        with self._cond:
            if self._closed:
                raise EngineError("the engine is shut down")
            self._waiting.append(request)
            self._cond.notify()
        return RequestHandle(self, request)

    def compile_grammar(self, params: SamplingParams) -> SamplingParams:
        """``params`` with its grammar compiled for this model (InvalidParameter if it cannot be)."""
        if isinstance(params.grammar, JsonGrammar | ToolGrammar):
            return replace(params, grammar=self.grammars.compile(params.grammar))
        return params

    def stream(self, prompt_ids, params: SamplingParams) -> Iterator[Update]:
        """Updates of one request, blocking (tests, benchmarks, scripts)."""
        q: queue.Queue[Update] = queue.Queue()
        handle = self.submit(prompt_ids, params, q.put)
        try:
            while True:
                update = q.get()
                if update.error:
                    raise EngineError(update.error)
                yield update
                if update.finished:
                    return
        finally:
            handle.cancel()

    def generate(self, prompt_ids, params: SamplingParams) -> Completion:
        return collect(self.stream(prompt_ids, params), params.n, len(prompt_ids))

    def prompt_logprobs(self, token_ids, top: int = 0) -> list[TokenLogprob | None]:
        """Each token's log-probability given the tokens before it (None for the first), with the ``top``
        most likely alternatives, under the raw distribution (blocking; scheduled like any request)."""
        return self.generate(token_ids, SamplingParams(max_tokens=0, prompt_logprobs=top)).prompt_logprobs

    def open(self, prompt_ids, params: SamplingParams) -> UpdateStream:
        """Submit a request now and read its updates later, from asyncio code (call it on the loop).

        The caller cancels it when it stops reading early; ``astream`` does that for you.
        """
        return UpdateStream(self, prompt_ids, params)

    async def astream(self, prompt_ids, params: SamplingParams) -> AsyncIterator[Update]:
        """Updates of one request for asyncio code; leaving the loop early cancels the request."""
        updates = self.open(prompt_ids, params)
        try:
            async for update in updates:
                yield update
        finally:
            updates.cancel()

    async def agenerate(self, prompt_ids, params: SamplingParams) -> Completion:
        updates = [u async for u in self.astream(prompt_ids, params)]
        return collect(iter(updates), params.n, len(prompt_ids))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    # -- scheduler ------------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _loop(self) -> None:
        cpu_priority.lower_this_thread(self.compute_niceness)
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    self._cond.wait()
                if self._closed:
                    for request in [*self._waiting, *self._running]:
                        request.sink(Update([], len(request.prompt), finished=True, error="engine shut down"))
                    return
                for request in [r for r in self._waiting if r.cancelled]:
                    self._waiting.remove(request)
            try:
                self._drop_cancelled()
                self._admit()
                if self._running:
                    self._step()
            except Exception as exc:   # the model failed: fail what is running, keep serving
                log.exception("decode step failed")
                for request in self._running:
                    self._release(request)
                    request.sink(Update([], len(request.prompt), finished=True, error=f"inference failed: {exc}"))
                self._running.clear()

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._running if r.cancelled]:
            self._release(request)
            self._running.remove(request)

    def _admit(self) -> None:
        # While others decode, admit one prefill per step so their streams do not stall.
        budget = 1 if self._running else self.max_num_seqs
        while budget and self._waiting:
            with self._cond:
                request = self._waiting[0]
                if request.params.width > len(self._free):
                    return
                self._waiting.popleft()
            budget -= 1
            request.slots = [self._free.pop(0) for _ in range(request.params.width)]
            try:
                self._start(request)
            except Exception as exc:
                log.exception("prefill failed")
                self._release(request)
                request.sink(Update([], len(request.prompt), finished=True, error=f"inference failed: {exc}"))

    def _room(self, slot: int) -> int:
        return self.max_model_len - self.backend.length(slot) - 1

    def _start(self, request: _Request) -> None:
        params, slots = request.params, request.slots
        logits = self._prefill(request)
        if params.max_tokens == 0:   # the prompt only scored: nothing to generate
            self._release(request)
            choices = [ChoiceDelta(index=i, text="", finished=True, finish_reason="length", token_ids=[],
                                   logprobs=[] if params.logprobs else None) for i in range(params.n)]
            self._sink(request, Update(choices, len(request.prompt), finished=True))
            return
        history = TokenHistory(self.vocab_size, request.prompt) if params.penalised else None
        if params.use_beam_search:
            root = Beam([], 0.0, self._text_stream(params), history)
            request.beam = BeamSearch(params=params, slots=slots, root=root, eos_ids=self.eos_ids)
            for src, dst in request.beam.step(logits[None, :], room=self._room(slots[0])):
                self.backend.copy(src, dst)
        else:
            rngs = make_rngs(params.seed, params.width)
            for slot in slots[1:]:   # every sample continues the same prompt (before any ends)
                self.backend.copy(slots[0], slot)
            for i, slot in enumerate(list(slots)):
                seq = Sequence(i, slot, self._text_stream(params),
                               history.copy() if history is not None else None, rngs[i],
                               self.grammars.matcher(params.grammar) if params.grammar is not None else None,
                               logprobs=[] if params.logprobs else None)
                request.seqs.append(seq)
                self._advance(request, seq, logits)
        self._emit(request)
        if not request.done:
            self._running.append(request)

    def _prefill(self, request: _Request) -> np.ndarray:
        """Run the prompt into the request's first slot; its last position's logits. With
        ``prompt_logprobs`` also score every prompt token (request.prompt_logprobs)."""
        slot, prompt, top = request.slots[0], request.prompt, request.params.prompt_logprobs
        if top is None:
            salt = request.params.cache_salt
            request.cached_tokens, cached = self.prefix_cache.match(prompt, salt=salt)
            logits = self.backend.prefill(slot, prompt, cached=cached)
            self.prefix_cache.insert(prompt, len(prompt), partial(self.backend.kv, slot), salt=salt)
            return logits
        scored: list[TokenLogprob | None] = [None]

        def score(start: int, rows: np.ndarray) -> None:
            for i, row in enumerate(rows):   # the row of position p predicts token p + 1
                if start + i + 1 < len(prompt):
                    scored.append(token_logprob(row, int(prompt[start + i + 1]), top))

        if self.backend.all_logits:
            logits = self.backend.prefill(slot, prompt, on_logits=score)
        else:
            # The graph's LM head sees the last position only: step the prompt through the decode
            # path, one token at a time (slower, same numbers).
            logits = self.backend.prefill(slot, prompt[:1])
            for pos in range(1, len(prompt)):
                score(pos - 1, logits[None, :])
                logits = self.backend.decode([slot], [int(prompt[pos])])[0]
        self.prefix_cache.insert(prompt, len(prompt), partial(self.backend.kv, slot), salt=request.params.cache_salt)
        request.prompt_logprobs = scored
        return logits

    @staticmethod
    def _sink(request: _Request, update: Update) -> None:
        """Hand the request an update; the prompt's logprobs ride on the first one."""
        update.cached_tokens = request.cached_tokens
        if request.prompt_logprobs is not None:
            update.prompt_logprobs, request.prompt_logprobs = request.prompt_logprobs, None
        request.sink(update)

    def _text_stream(self, params: SamplingParams) -> TextStream:
        return TextStream(self._detokenizer, stop=params.stop, prefix=params.forced_prefix)

    def _advance(self, request: _Request, seq: Sequence, row: np.ndarray) -> None:
        params = request.params
        x = apply_penalties(row, seq.history, params) if seq.history is not None else row
        if seq.grammar is not None:
            x = seq.grammar.mask(x)
        token, logprob = choose_token(x, params, seq.rng, want_logprob=params.width > params.n)
        seq.cum_logprob += logprob
        if seq.logprobs is not None:   # of the raw row: see services.lib.inference.logprobs
            seq.logprobs.append(token_logprob(row, token, params.top_logprobs))
        seq.append(token, params=params, eos_ids=self.eos_ids, room=self._room(seq.slot))
        if seq.finished and seq.slot is not None:
            self._remember(request, seq)
            self._free_slot(request, seq.slot)
            seq.slot = None

    def _remember(self, request: _Request, seq: Sequence) -> None:
        """Cache the keys and values of a finished answer too: the next turn of the conversation
        resends it after the prompt."""
        if self.prefix_cache.enabled:
            tokens = np.concatenate([request.prompt, np.asarray(seq.tokens, dtype=np.int64)])
            self.prefix_cache.insert(tokens, self.backend.length(seq.slot), partial(self.backend.kv, seq.slot),
                                     salt=request.params.cache_salt)

    def _step(self) -> None:
        slots, tokens, owners = [], [], []
        for request in self._running:
            if request.beam is not None:
                live = request.beam.live
                slots += [b.slot for b in live]
                tokens += [b.tokens[-1] for b in live]
            else:
                live = [s for s in request.seqs if not s.finished]
                slots += [s.slot for s in live]
                tokens += [s.pending for s in live]
            owners.append((request, live))
        logits = self.backend.decode(slots, tokens)
        row = 0
        for request, live in owners:
            rows = logits[row:row + len(live)]
            row += len(live)
            if request.beam is not None:
                room = self._room(live[0].slot)
                for src, dst in request.beam.step(rows, room=room):
                    self.backend.copy(src, dst)
            else:
                for seq, logit_row in zip(live, rows):
                    self._advance(request, seq, logit_row)
            self._emit(request)
        self._running = [r for r in self._running if not r.done]

    def _emit(self, request: _Request) -> None:
        n_prompt = len(request.prompt)
        if request.done:
            self._release(request)
            self._sink(request, Update(self._final_choices(request), n_prompt, finished=True))
        elif request.streams:
            deltas = self._stream_deltas(request)
            if deltas:
                self._sink(request, Update(deltas, n_prompt))

    @staticmethod
    def _stream_deltas(request: _Request) -> list[ChoiceDelta]:
        """New text of each choice, and each choice's finish exactly once."""
        out = []
        for seq in request.seqs:
            if seq.reported:
                continue
            delta = seq.delta()
            if delta.text or delta.finished:
                out.append(delta)
                seq.reported = delta.finished
        return out

    def _final_choices(self, request: _Request) -> list[ChoiceDelta]:
        if request.beam is not None:
            return [ChoiceDelta(index=i, text=b.stream.take(final=True), finished=True,
                                finish_reason=b.finish_reason, stop_reason=b.stream.stop_reason,
                                completion_tokens=len(b.tokens), token_ids=list(b.tokens))
                    for i, b in enumerate(request.beam.results())]
        if request.streams:
            return self._stream_deltas(request)
        # best_of > n: the n samples with the highest cumulative log-probability.
        best = sorted(request.seqs, key=lambda s: -s.cum_logprob)[: request.params.n]
        out = []
        for i, seq in enumerate(best):
            delta = seq.delta(final_text=True)
            delta.index = i
            out.append(delta)
        return out

    def _free_slot(self, request: _Request, slot: int) -> None:
        if slot in request.slots:
            request.slots.remove(slot)
            self.backend.release(slot)
            self._free.append(slot)
            self._free.sort()

    def _release(self, request: _Request) -> None:
        for slot in list(request.slots):
            self._free_slot(request, slot)


def collect(updates: Iterator[Update], n: int, prompt_tokens: int) -> Completion:
    """Fold a request's updates into the full completion."""
    choices = {i: Choice(index=i) for i in range(n)}
    prompt_logprobs, cached_tokens = None, 0
    for update in updates:
        if update.prompt_logprobs is not None:
            prompt_logprobs = update.prompt_logprobs
        for delta in update.choices:
            choice = choices.setdefault(delta.index, Choice(index=delta.index))
            choice.text += delta.text
            choice.completion_tokens = delta.completion_tokens
            if delta.finished:
                choice.finish_reason, choice.stop_reason = delta.finish_reason, delta.stop_reason
                choice.token_ids = delta.token_ids or []
            if delta.logprobs is not None:
                choice.logprobs = (choice.logprobs or []) + delta.logprobs
        prompt_tokens, cached_tokens = update.prompt_tokens, update.cached_tokens
    return Completion(sorted(choices.values(), key=lambda c: c.index), prompt_tokens, prompt_logprobs,
                      cached_tokens)
