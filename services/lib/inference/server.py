"""Per-instance OpenAI-compatible server: one model, one engine, one process.

    python -m services.lib.inference.server --model-dir DIR --port P [--served-model-name NAME] [--max-model-len N]

The deployer starts one such process per service instance; the gateway forwards users' calls to it.
Besides ``/v1/chat/completions``, ``/v1/completions`` (the legacy API) and ``/v1/models`` it offers vLLM's
``POST /tokenize`` and ``POST /detokenize``, and ``GET /metrics`` (Prometheus text: requests, prefix
cache hits; ``--prefix-cache-bytes`` sizes the cache).
Every call must carry the instance's secret (``MAAS_INSTANCE_SECRET``, see services.lib.inference.auth);
``--no-auth`` runs a standalone server for local experiments. ``GET /health`` answers 503 until the
model is loaded (an export on first use can take a while), then 200; if loading fails the process
exits with status 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.openai import (
    PROMPT_TOKENS_HEADER,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Completion,
    CompletionChoice,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    FunctionCall,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    TokenizeRequest,
    TokenizeResponse,
    ToolCall,
    Usage,
    error_body,
)
from services.lib.inference.auth import SECRET_ENV, InstanceSecret, RequireInstanceSecret
from services.lib.inference.chat import encode, render_prompt
from services.lib.inference.completions import LegacyLogprobs, parse_prompts
from services.lib.inference.cpu_priority import DEFAULT_COMPUTE_NICENESS
from services.lib.inference.engine import DEFAULT_MAX_NUM_SEQS, Engine, EngineError, UpdateStream
from services.lib.inference.grammar import JsonGrammar, ToolGrammar
from services.lib.inference.instance_metrics import PROMETHEUS_TEXT, instance_metrics
from services.lib.inference.logprobs import TokenText
from services.lib.inference.params import InvalidParameter, SamplingParams
from services.lib.inference.prefix_cache import CACHE_SALT_HEADER, DEFAULT_PREFIX_CACHE_BYTES
from services.lib.inference.tool_calls import Content, ToolCallParser, parse_tool_calls

log = logging.getLogger("services.lib.inference.server")


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type=type, param=param, code=code)


def _bad_request(exc: InvalidParameter) -> OpenAIError:
    return OpenAIError(400, exc.message, param=exc.param, code=exc.code)


def _validation_error(exc: ValidationError) -> OpenAIError:
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err.get("loc", ())) or None
    if err.get("type") == "missing":
        message = f"{param} is required"
    else:
        message = f"{param}: {err.get('msg', 'invalid value').removeprefix('Value error, ')}"
    return OpenAIError(400, message, param=param, code="invalid_parameter")


class ModelState:
    """The engine once loaded; what /health reports meanwhile."""

    def __init__(self, *, model_dir: Path, served_model_name: str, max_model_len: int | None,
                 max_num_seqs: int, threads: int | None, compute_niceness: int = DEFAULT_COMPUTE_NICENESS,
                 prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES):
        self.model_dir, self.name = Path(model_dir), served_model_name
        self._options = dict(max_model_len=max_model_len, max_num_seqs=max_num_seqs, threads=threads,
                             compute_niceness=compute_niceness, prefix_cache_bytes=prefix_cache_bytes)
        self.engine: Engine | None = None
        self.error: str | None = None
        self.created = int(time.time())
        self._token_text: TokenText | None = None

    def token_text(self) -> TokenText:
        """Token ids as logprobs show them, cached across requests (used on the event loop only)."""
        if self._token_text is None:
            self._token_text = TokenText(self.ready_engine().tokenizer)
        return self._token_text

    def load(self) -> None:
        try:
            self.engine = Engine(self.model_dir, **self._options)
        except Exception as exc:
            log.exception("loading %s failed", self.model_dir)
            self.error = f"{type(exc).__name__}: {exc}"

    def ready_engine(self) -> Engine:
        if self.engine is None:
            raise OpenAIError(503, "the model is still loading" if self.error is None else
                              f"the model failed to load: {self.error}", type="service_unavailable")
        return self.engine


def _response_grammar(req: ChatCompletionRequest) -> JsonGrammar | None:
    """What ``response_format`` constrains the output to (None: free text)."""
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JsonGrammar(None)
    schema = fmt.json_schema.schema_
    return JsonGrammar.from_schema({} if schema is None or schema is True else schema)


def _sampling_params(req: ChatCompletionRequest, forced_prefix: str,
                     grammar: JsonGrammar | ToolGrammar | None, cache_salt: str) -> SamplingParams:
    return SamplingParams(
        max_tokens=req.resolved_max_tokens(), temperature=req.temperature, top_p=req.top_p,
        top_k=req.top_k, presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty, stop=req.stop or (), n=req.n, best_of=req.best_of,
        use_beam_search=req.use_beam_search, length_penalty=req.length_penalty,
        ignore_eos=req.ignore_eos, seed=req.seed, logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs or 0,
        forced_prefix=forced_prefix, grammar=grammar, cache_salt=cache_salt)


def _usage(prompt: int, completion: int, cached: int) -> Usage:
    """OpenAI's usage, with how much of the prompt the prefix cache saved (``prompt_tokens_details``)."""
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=cached))


def _tool_call(call) -> ToolCall:
    return ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))


class ChatHandler:
    """One /v1/chat/completions request, validated up front so errors are 400s, not broken streams."""

    def __init__(self, state: ModelState, req: ChatCompletionRequest, *, cache_salt: str = ""):
        self.state, self.req = state, req
        self.engine = state.ready_engine()
        if req.model != state.name:
            raise OpenAIError(404, f"The model `{req.model}` does not exist.", type="not_found_error",
                              param="model", code="model_not_found")
        try:
            self.prompt = render_prompt(self.engine.tokenizer, req.messages, tools=req.tools,
                                        tool_choice=req.tool_choice)
            grammar = _response_grammar(req)
            if grammar is not None and self.prompt.tools_enabled:
                raise InvalidParameter("response_format", "response_format json_object/json_schema cannot be "
                                       "combined with tools (unless tool_choice is 'none')")
            single = req.parallel_tool_calls is False
            if self.prompt.tools_enabled and req.use_beam_search and single:
                raise InvalidParameter("parallel_tool_calls", "parallel_tool_calls false cannot be combined with "
                                       "use_beam_search (one call per answer is enforced by a grammar)")
            if self.prompt.tools_enabled and not req.use_beam_search:
                # Calls always parse: once opened (or from the start, when one is required), a call names
                # one of the tools and its arguments follow that tool's schema. (Beams would each need
                # their own grammar state: their calls stay unconstrained.)
                grammar = ToolGrammar.for_request(req.tools, req.tool_choice, self.prompt.forced_prefix,
                                                  single=single)
            # The grammar is compiled later, off the event loop (prepare); its rules are checked now.
            self.params = _sampling_params(req, self.prompt.forced_prefix, grammar, cache_salt)
            self.ids = encode(self.engine.tokenizer, self.prompt.text)
            self.engine.check(self.ids, self.params)
        except InvalidParameter as exc:
            raise _bad_request(exc) from None
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.updates: UpdateStream | None = None
        self.token_text = state.token_text() if self.params.logprobs else None

    @property
    def prompt_tokens(self) -> int:
        return len(self.ids)

    def _logprobs(self, entries) -> dict | None:
        """OpenAI's ``choices[i].logprobs`` for these tokens (None when the request did not ask)."""
        if self.token_text is None or entries is None:
            return None
        return {"content": self.token_text.content(entries), "refusal": None}

    async def prepare(self) -> None:
        """Compile the request's grammar (response_format, tools) on a worker thread: a new schema
        takes milliseconds to seconds over a large vocabulary, and the loop relays other streams meanwhile."""
        if self.params.grammar is None:
            return
        try:
            self.params = await asyncio.to_thread(self.engine.compile_grammar, self.params)
        except InvalidParameter as exc:
            raise _bad_request(exc) from None

    def open(self) -> None:
        """Submit to the engine now: the prefill runs while the response starts."""
        if self.updates is None:
            self.updates = self.engine.open(self.ids, self.params)

    def cancel(self) -> None:
        if self.updates is not None:
            self.updates.cancel()

    async def complete(self) -> dict:
        try:
            result = await self.engine.agenerate(self.ids, self.params)
        except EngineError as exc:
            raise OpenAIError(500, str(exc), type="server_error") from None
        choices = []
        for c in result.choices:
            content, calls, finish = c.text, [], c.finish_reason
            if self.prompt.tools_enabled:
                content, parsed = parse_tool_calls(c.text)
                calls = [_tool_call(p) for p in parsed]
                if calls and finish == "stop":
                    finish = "tool_calls"
            choices.append(Choice(index=c.index, message=AssistantMessage(content=content, tool_calls=calls),
                                  logprobs=self._logprobs(c.logprobs or []), finish_reason=finish,
                                  stop_reason=c.stop_reason))
        usage = _usage(result.prompt_tokens, result.completion_tokens, result.cached_tokens)
        return ChatCompletion(id=self.id, created=self.created, model=self.state.name, choices=choices,
                              usage=usage).model_dump(mode="json")

    def _chunk(self, choices: list[dict], *, usage: dict | None = None) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.state.name, "choices": choices}
        if self.req.stream_options and self.req.stream_options.include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    @staticmethod
    def _choice(index: int, delta: dict, finish: str | None = None, stop_reason=None, logprobs=None) -> dict:
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish,
                "stop_reason": stop_reason}

    async def stream(self) -> AsyncIterator[str]:
        # The role chunks go out together with the first token, not before it: meanwhile the prefill
        # has the cores to itself (the gateway and the client would be busy relaying and parsing
        # them, and the first token would come later).
        head = "".join(self._chunk([self._choice(i, {"role": "assistant", "content": ""})])
                       for i in range(self.params.n))
        async for event in self._events():
            if head:
                event, head = head + event, ""
            yield event

    async def _events(self) -> AsyncIterator[str]:
        n = self.params.n
        parsers = {i: ToolCallParser() for i in range(n)} if self.prompt.tools_enabled else {}
        held = {i: "" for i in range(n)}        # whitespace that may only separate tool calls
        tokens = {i: 0 for i in range(n)}
        cached = 0
        try:
            self.open()
            async for update in self.updates:
                cached = update.cached_tokens
                for d in update.choices:
                    tokens[d.index] = d.completion_tokens
                    # The tokens' logprobs ride on the first chunk of their text, else on the finish.
                    logprobs = self._logprobs(d.logprobs) if d.logprobs else None
                    for piece in self._pieces(d, parsers.get(d.index), held):
                        yield self._chunk([self._choice(d.index, piece, logprobs=logprobs)])
                        logprobs = None
                    if logprobs is not None and not d.finished:   # text a tool-call parser still holds
                        yield self._chunk([self._choice(d.index, {}, logprobs=logprobs)])
                    if d.finished:
                        parser = parsers.get(d.index)
                        finish = d.finish_reason
                        if parser is not None and parser.calls and finish == "stop":
                            finish = "tool_calls"
                        yield self._chunk([self._choice(d.index, {}, finish, d.stop_reason, logprobs)])
        except EngineError as exc:
            yield f"data: {json.dumps(error_body(str(exc), type='server_error'))}\n\n"
            yield "data: [DONE]\n\n"
            return
        if self.req.stream_options and self.req.stream_options.include_usage:
            usage = _usage(len(self.ids), sum(tokens.values()), cached)
            yield self._chunk([], usage=usage.model_dump(mode="json"))
        yield "data: [DONE]\n\n"

    @staticmethod
    def _pieces(d, parser: ToolCallParser | None, held: dict[int, str]) -> list[dict]:
        """Deltas to send for one choice's new text (content, or tool calls once complete)."""
        if parser is None:
            return [{"content": d.text}] if d.text else []
        events = parser.feed(d.text) + (parser.finish() if d.finished else [])
        out = []
        for event in events:
            if isinstance(event, Content):
                # Trailing whitespace waits: if a call follows, it was only the call's separator
                # (dropped, as in the non-streamed answer); otherwise it goes out later.
                text = held[d.index] + event.text
                body = text.rstrip()
                held[d.index] = text[len(body):]
                if body:
                    out.append({"content": body})
            else:
                index = next(k for k, call in enumerate(parser.calls) if call is event)
                out.append({"tool_calls": [{"index": index, "id": event.id, "type": "function",
                                            "function": {"name": event.name, "arguments": event.arguments}}]})
        if d.finished and held[d.index] and not parser.calls:
            out.append({"content": held[d.index]})
            held[d.index] = ""
        return out


class CompletionHandler:
    """One /v1/completions request (OpenAI's legacy API): every prompt is one engine request with ``n``
    choices; choice ``i * n + j`` is prompt i's j-th. Validated up front so errors are 400s."""

    def __init__(self, state: ModelState, req: CompletionRequest, *, cache_salt: str = ""):
        self.state, self.req = state, req
        self.engine = _engine_for(state, req.model)
        max_tokens = req.resolved_max_tokens()
        want = req.logprobs is not None
        try:
            self.prompts = parse_prompts(req.prompt, self.engine.tokenizer)
            if max_tokens == 0 and not req.echo:
                raise InvalidParameter("max_tokens", "max_tokens must be at least 1 (0 only with echo: the "
                                                     "answer is then the prompt, scored with logprobs)")
            # With echo the prompt's tokens are scored too; max_tokens 0 scores them only.
            prompt_logprobs = (req.logprobs or 0) if req.echo and (want or max_tokens == 0) else None
            self.params = SamplingParams(
                max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                repetition_penalty=req.repetition_penalty, stop=req.stop or (), n=req.n, best_of=req.best_of,
                ignore_eos=req.ignore_eos, seed=req.seed, logprobs=want, top_logprobs=req.logprobs or 0,
                prompt_logprobs=prompt_logprobs, cache_salt=cache_salt)
            for prompt in self.prompts:
                self.engine.check(prompt.ids, self.params)
        except InvalidParameter as exc:
            if exc.param == "messages":   # the engine's name for the prompt in chat calls
                exc = InvalidParameter("prompt", exc.message.replace("messages", "prompt"), code=exc.code)
            raise _bad_request(exc) from None
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.token_text = state.token_text() if want else None
        self.updates: list[UpdateStream] = []

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p.ids) for p in self.prompts)

    def _legacy(self) -> LegacyLogprobs | None:
        return LegacyLogprobs(self.token_text, self.req.logprobs) if self.token_text is not None else None

    def open(self) -> None:
        """Submit every prompt now (the engine batches them); they are read in order."""
        if not self.updates:
            self.updates = [self.engine.open(p.ids, self.params) for p in self.prompts]

    def cancel(self) -> None:
        for updates in self.updates:
            updates.cancel()

    async def complete(self) -> dict:
        try:
            results = await asyncio.gather(*(self.engine.agenerate(p.ids, self.params) for p in self.prompts))
        except EngineError as exc:
            raise OpenAIError(500, str(exc), type="server_error") from None
        n, choices = self.params.n, []
        for i, (prompt, result) in enumerate(zip(self.prompts, results)):
            for c in result.choices:
                text, logprobs, legacy = c.text, None, self._legacy()
                if self.req.echo:
                    text = prompt.text + text
                if legacy is not None:
                    head = legacy.piece(result.prompt_logprobs, prompt.ids) if self.req.echo else None
                    tail = legacy.piece(c.logprobs or [])
                    logprobs = tail if head is None else {k: head[k] + tail[k] for k in head}
                choices.append(CompletionChoice(index=i * n + c.index, text=text, logprobs=logprobs,
                                                finish_reason=c.finish_reason, stop_reason=c.stop_reason))
        usage = _usage(self.prompt_tokens, sum(r.completion_tokens for r in results),
                       sum(r.cached_tokens for r in results))
        return Completion(id=self.id, created=self.created, model=self.state.name, choices=choices,
                          usage=usage).model_dump(mode="json")

    def _chunk(self, choices: list[dict], *, usage: dict | None = None) -> str:
        body = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.state.name,
                "choices": choices}
        if self.req.stream_options and self.req.stream_options.include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    @staticmethod
    def _choice(index: int, text: str, logprobs=None, finish=None, stop_reason=None) -> dict:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish,
                "stop_reason": stop_reason}

    async def stream(self) -> AsyncIterator[str]:
        n, completion, cached = self.params.n, 0, 0
        try:
            self.open()
            for i, (prompt, updates) in enumerate(zip(self.prompts, self.updates)):
                legacy = {j: self._legacy() for j in range(n)}
                echoed = not self.req.echo
                tokens = {j: 0 for j in range(n)}
                cached_now = 0
                async for update in updates:
                    cached_now = update.cached_tokens
                    if not echoed:   # the prompt goes first, with its logprobs (they come on the first update)
                        echoed = True
                        for j in range(n):
                            lp = (legacy[j].piece(update.prompt_logprobs, prompt.ids)
                                  if legacy[j] is not None else None)
                            yield self._chunk([self._choice(i * n + j, prompt.text, lp)])
                    for d in update.choices:
                        tokens[d.index] = d.completion_tokens
                        lp = legacy[d.index].piece(d.logprobs or []) if legacy[d.index] is not None else None
                        if d.text or d.finished:
                            yield self._chunk([self._choice(i * n + d.index, d.text, lp,
                                                            d.finish_reason if d.finished else None,
                                                            d.stop_reason if d.finished else None)])
                completion += sum(tokens.values())
                cached += cached_now
        except EngineError as exc:
            yield f"data: {json.dumps(error_body(str(exc), type='server_error'))}\n\n"
            yield "data: [DONE]\n\n"
            return
        if self.req.stream_options and self.req.stream_options.include_usage:
            usage = _usage(self.prompt_tokens, completion, cached)
            yield self._chunk([], usage=usage.model_dump(mode="json"))
        yield "data: [DONE]\n\n"


class _EventStream(StreamingResponse):
    """A streamed chat completion whose engine request ends with the response, however it ends
    (a client gone before the first chunk never reads the stream, so the stream cannot cancel it)."""

    def __init__(self, handler: ChatHandler | CompletionHandler):
        super().__init__(handler.stream(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                  PROMPT_TOKENS_HEADER: str(handler.prompt_tokens)})
        self.handler = handler

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.handler.cancel()


async def _json_body(request: Request):
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OpenAIError(400, f"malformed JSON body: {exc}", code="invalid_json") from None


def _parse(model, body):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _engine_for(state: ModelState, model: str | None) -> Engine:
    engine = state.ready_engine()
    if model is not None and model != state.name:
        raise OpenAIError(404, f"The model `{model}` does not exist.", type="not_found_error",
                          param="model", code="model_not_found")
    return engine


def create_app(*, model_dir: Path, served_model_name: str | None = None, max_model_len: int | None = None,
               max_num_seqs: int = DEFAULT_MAX_NUM_SEQS, threads: int | None = None,
               compute_niceness: int = DEFAULT_COMPUTE_NICENESS, on_load_failure=None,
               secret: str | None, prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> FastAPI:
    """``secret``: what every call but the health probe must bring; None only for a standalone server."""
    name = served_model_name or Path(model_dir).name
    guard = InstanceSecret(secret=secret) if secret is not None else None
    state = ModelState(model_dir=model_dir, served_model_name=name, max_model_len=max_model_len,
                       max_num_seqs=max_num_seqs, threads=threads, compute_niceness=compute_niceness,
                       prefix_cache_bytes=prefix_cache_bytes)

    async def lifespan(app: FastAPI):
        def load():
            state.load()
            if state.error and on_load_failure:
                on_load_failure()
        threading.Thread(target=load, name="model-loader", daemon=True).start()
        yield
        if state.engine is not None:
            await asyncio.to_thread(state.engine.close)

    app = FastAPI(title=f"OpenMaaS inference: {name}", lifespan=lifespan)
    app.state.model = state
    if guard is not None:
        app.add_middleware(RequireInstanceSecret, secret=guard)

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), type=kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _server_error(_: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {exc}", type="server_error"), status_code=500)

    @app.get("/health")
    async def health(request: Request):
        if guard is not None and not guard.admits_scope(request.scope):
            # An open probe: the status only (no model name, engine details or load error with paths).
            ready = state.engine is not None
            status = "ready" if ready else "loading" if state.error is None else "failed"
            return JSONResponse({"status": status}, status_code=200 if ready else 503)
        if state.engine is not None:
            engine = state.engine
            requests = engine.requests()
            return {"status": "ready", "model": name, "backend": engine.backend_name,
                    "providers": engine.providers, "max_model_len": engine.max_model_len,
                    "requests_running": requests["running"], "requests_waiting": requests["waiting"]}
        status = "loading" if state.error is None else "failed"
        return JSONResponse({"status": status, "model": name, "error": state.error}, status_code=503)

    @app.get("/metrics")
    async def metrics():
        """Prometheus text: requests in the engine and the prefix cache's use (tokens, as vLLM counts)."""
        engine = state.ready_engine()
        return PlainTextResponse(instance_metrics(engine, model=name), media_type=PROMETHEUS_TEXT)

    @app.get("/v1/models")
    async def models():
        # No root: the model folder is a path on the instance's machine, none of the caller's business.
        card = ModelCard(id=name, created=state.created,
                         max_model_len=state.engine.max_model_len if state.engine else max_model_len)
        return ModelList(data=[card]).model_dump(mode="json")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = _parse(ChatCompletionRequest, await _json_body(request))
        handler = ChatHandler(state, req, cache_salt=request.headers.get(CACHE_SALT_HEADER, ""))
        await handler.prepare()
        if req.stream:
            handler.open()
            return _EventStream(handler)
        return JSONResponse(await handler.complete())

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = _parse(CompletionRequest, await _json_body(request))
        handler = CompletionHandler(state, req, cache_salt=request.headers.get(CACHE_SALT_HEADER, ""))
        if req.stream:
            handler.open()
            return _EventStream(handler)
        return JSONResponse(await handler.complete())

    @app.post("/tokenize")
    async def tokenize(request: Request):
        """vLLM's: the token ids of a text, or of messages rendered exactly as a chat call renders them."""
        req = _parse(TokenizeRequest, await _json_body(request))
        engine = _engine_for(state, req.model)
        if (req.prompt is None) == (req.messages is None):
            raise OpenAIError(400, "give either prompt or messages", param="prompt" if req.prompt is None
                              else "messages", code="invalid_parameter")
        try:
            if req.prompt is not None:
                ids = engine.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens)["input_ids"]
            else:
                ids = encode(engine.tokenizer, render_prompt(engine.tokenizer, req.messages, tools=req.tools).text)
        except InvalidParameter as exc:
            raise _bad_request(exc) from None
        return TokenizeResponse(count=len(ids), max_model_len=engine.max_model_len, tokens=ids).model_dump()

    @app.post("/detokenize")
    async def detokenize(request: Request):
        req = _parse(DetokenizeRequest, await _json_body(request))
        engine = _engine_for(state, req.model)
        bad = next((t for t in req.tokens if not 0 <= t < len(engine.tokenizer)), None)
        if bad is not None:
            raise OpenAIError(400, f"tokens: {bad} is not a token id of this model (0 to "
                              f"{len(engine.tokenizer) - 1})", param="tokens", code="invalid_parameter")
        return DetokenizeResponse(prompt=engine.tokenizer.decode(req.tokens)).model_dump()

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from services.lib.common.http import server_config

    parser = argparse.ArgumentParser(description="OpenAI-compatible server for one model")
    parser.add_argument("--model-dir", required=True, type=Path,
                        help="HF model folder (exported to ONNX on first load) or ONNX folder")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--served-model-name", default=None, help="model name clients use (default: folder name)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="longest prompt + completion in tokens (default: the model's context length)")
    parser.add_argument("--max-num-seqs", type=int, default=DEFAULT_MAX_NUM_SEQS,
                        help="sequences decoded together (KV-cache slots)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--compute-niceness", type=int, default=DEFAULT_COMPUTE_NICENESS, choices=range(0, 20),
                        metavar="0-19", help="how much lower the CPU priority of the decode threads is than the "
                        "HTTP loop's, so relaying tokens never waits behind a decode step (0: the same)")
    parser.add_argument("--prefix-cache-bytes", type=int, default=DEFAULT_PREFIX_CACHE_BYTES, metavar="BYTES",
                        help="memory for the KV cache of earlier prompts and answers, reused by requests that "
                             "start alike (system prompt, earlier turns); least recently used first out; 0: off "
                             f"(default {DEFAULT_PREFIX_CACHE_BYTES})")
    parser.add_argument("--no-auth", action="store_true",
                        help=f"answer calls without the secret in ${SECRET_ENV} (a standalone server for local "
                             "experiments; never one the platform routes to)")
    args = parser.parse_args(argv)
    # Out of the environment at once: nothing this process starts (an exporter, a tokenizer helper) inherits it.
    secret = os.environ.pop(SECRET_ENV, "") or None
    if secret is None and not args.no_auth:
        parser.error(f"{SECRET_ENV} is not set: every call must carry the instance's secret "
                     "(the deployer sets it); pass --no-auth to serve without one")
    if args.prefix_cache_bytes < 0:
        parser.error(f"--prefix-cache-bytes must be >= 0 (0 turns the prefix cache off), got {args.prefix_cache_bytes}")
    if secret is not None and args.no_auth:
        parser.error(f"--no-auth and {SECRET_ENV} contradict each other: give one")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s [%(levelname)s] %(message)s")

    failed = threading.Event()
    server: uvicorn.Server | None = None

    def on_load_failure():
        failed.set()
        if server is not None:
            server.should_exit = True

    app = create_app(model_dir=args.model_dir, served_model_name=args.served_model_name,
                     max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
                     threads=args.threads, compute_niceness=args.compute_niceness,
                     on_load_failure=on_load_failure, secret=secret, prefix_cache_bytes=args.prefix_cache_bytes)
    # log_config=None: uvicorn keeps the logging set up above instead of replacing it.
    # No access log: the gateway records every call already, and a line per call costs the first token.
    server = uvicorn.Server(server_config(app, host=args.host, port=args.port, log_config=None, access_log=False))
    server.run()
    return 1 if failed.is_set() else 0


if __name__ == "__main__":
    raise SystemExit(main())
