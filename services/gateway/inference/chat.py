"""One chat (or legacy completions) call through the gateway: resolve the service, check, limit, route,
relay, meter. What differs between the two endpoints is services.gateway.inference.endpoints'; the path
here is the same for both.

Order of checks (each rejection is an OpenAI-style error and meters nothing):
1. the service (404 unknown or another account's), the parameters (400) and the template's max
   input+output length (400 ``context_length_exceeded``);
2. the free quota of a preset service: the call reserves the most it can use (403 not claimed, 429
   when that does not fit) and settles with its true usage when it ends, however it ends;
3. the service's state (409 not running, 503 deploying; a preset that is not running is started
   and waited for: a cold start);
4. content moderation of the input (400 ``content_filter``; a completions prompt given as token ids
   is decoded by an instance of the service first: the gateway has no tokenizer);
5. the service's QPS limit (429 with Retry-After).
The API key's own limits come first: the services it may call (403, with the service lookup) and its
requests and tokens per minute (429 with Retry-After, keys/limits.py) before the free quota.
Then the least-busy ready instance answers; a refused connection (an instance that just stopped)
moves the call to another one. Streams are relayed line by line as they arrive; the gateway always
asks the instance for the usage chunk and drops it again when the client did not ask for it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict

from fastapi import Depends
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from contracts.openai import PROMPT_TOKENS_HEADER, interactive_max_tokens
from contracts.serving import PresetServiceWakeRequested
from services.lib.common.context import Platform, get_component
from services.lib.readmodels.serving_refs import InstanceRef, ServiceRef
from services.gateway.inference.endpoints import CHAT, COMPLETIONS, Endpoint
from services.gateway.inference.genai_telemetry import ChatTelemetry
from services.gateway.inference.moderation import Moderation
from services.gateway.inference.routing import Router
from services.gateway.inference.upstream import (
    InstanceUnreachable,
    Upstream,
    UpstreamBroken,
    UpstreamResponse,
    UpstreamTimeout,
)
from services.gateway.keys import service as keys
from services.gateway.keys.limits import KEY_WINDOWS, KeyLimits
from services.gateway.keys.models import Caller
from services.gateway.oai_errors import OpenAIError, invalid
from services.gateway.quotas import calls as quota_calls
from services.gateway.quotas.ledger import NO_RESERVATION, QuotaLedger, Reservation
from services.gateway.quotas.metering import UsageRecorder
from services.gateway.quotas.presets import pending_message, pending_preset
from services.gateway.quotas.ratelimit import QPS_BUCKETS, SharedQpsLimiter
from services.gateway.quotas.store import QUOTAS, QuotaStore
from services.gateway.settings import GatewaySettings, gateway_settings
from services.gateway.views import keep_fresh

log = logging.getLogger(__name__)


def _token_count(usage: dict | None, key: str) -> int:
    value = (usage or {}).get(key)
    return int(value) if isinstance(value, (int, float)) else 0


def _cached_count(usage: dict | None) -> int:
    """Prompt tokens the instance's prefix cache saved (OpenAI's ``usage.prompt_tokens_details``)."""
    details = (usage or {}).get("prompt_tokens_details")
    return _token_count(details if isinstance(details, dict) else None, "cached_tokens")


def _header_count(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() else 0


class ChatGateway:
    def __init__(self, platform: Platform, settings: GatewaySettings | None = None):
        self.platform = platform
        self.settings = settings or gateway_settings()
        self.router = Router(platform, refresh=self.settings.routing_refresh_seconds)
        self.limiter = SharedQpsLimiter(platform.mongo[QPS_BUCKETS])   # one budget across gateway replicas
        self.ledger = QuotaLedger(QuotaStore(platform.mongo[QUOTAS]), chunk=self.settings.quota_chunk_tokens,
                                  lease_seconds=self.settings.quota_lease_seconds,
                                  idle_release=self.settings.quota_idle_release_seconds)
        self.meter = UsageRecorder(platform)
        self.key_limits = KeyLimits(platform.mongo[KEY_WINDOWS])
        self.moderation = Moderation(platform)
        self.upstream = Upstream(connect_timeout=self.settings.upstream_connect_timeout,
                                 read_timeout=self.settings.upstream_read_timeout)
        self._woken: dict[str, float] = {}

    async def close(self) -> None:
        await self.meter.flush()
        await self.key_limits.flush()
        await self.ledger.flush(closing=True)
        await self.upstream.close()

    # ------------------------------------------------------------------------------------ resolve

    async def resolve(self, caller: Caller, *, service_id: str | None, model) -> ServiceRef:
        if model is not None and not isinstance(model, str):
            raise invalid("model must be a string", param="model")
        if service_id is not None:
            service = await self.router.service(service_id)
            if service is None:
                await self._raise_if_pending_preset(service_id)
                raise OpenAIError(404, f"The service '{service_id}' does not exist.", code="service_not_found")
            if not service.preset and service.tenant_id != caller.tenant_id:
                # Another account's service answers as one that does not exist: nothing tells it does.
                raise OpenAIError(404, f"The service '{service_id}' does not exist.", code="service_not_found")
            keys.check_allowed(caller, service)
            if model and model != service.name:
                raise OpenAIError(404, f"The model '{model}' does not exist on this service; call it with "
                                  f"model '{service.name}'.", param="model", code="model_not_found")
            return service
        if not model:
            raise invalid("model is required: the name of a running service or of a preset service",
                          param="model", code="missing_required_parameter")
        service = await self.router.service_by_name(tenant_id=caller.tenant_id, name=model)
        if service is None:
            await self._raise_if_pending_preset(model)
            raise OpenAIError(404, f"The model '{model}' does not exist or you do not have access to it.",
                              param="model", code="model_not_found")
        keys.check_allowed(caller, service)
        return service

    async def _raise_if_pending_preset(self, ident: str) -> None:
        """A preset whose service does not exist yet is importing its weights: say so, not "does not exist"."""
        pending = await pending_preset(self.platform, ident)
        if pending is not None:
            template, state = pending
            message = pending_message(template.id, state)
            raise OpenAIError(503, message[0].upper() + message[1:], code="preset_not_ready",
                              retry_after=None if state.status == "failed" else (5 if state.status == "ready" else 30))

    async def ensure_callable(self, caller: Caller, service: ServiceRef) -> ServiceRef:
        if service.callable:
            return service
        if service.preset and service.status != "stopping":
            return await self._wake(caller, service)
        if service.status == "deploying":
            raise OpenAIError(503, f"Service '{service.name}' is still deploying; try again shortly.",
                              code="service_deploying", retry_after=5)
        raise OpenAIError(409, f"Service '{service.name}' is {service.status}; only a running service can be "
                          "called (start it first).", code="service_not_running")

    async def _wake(self, caller: Caller, service: ServiceRef) -> ServiceRef:
        """Start a preset service on its first call and wait for it (a cold start)."""
        now = time.monotonic()
        if service.desired != "running" and now - self._woken.get(service.id, -1e9) > 30:
            self._woken[service.id] = now
            async with self.platform.uow() as uow:
                uow.emit(PresetServiceWakeRequested(service_id=service.id, requested_by=caller.user_id),
                         tenant_id=service.tenant_id, subject=f"services/{service.id}")
            log.info("preset service %s is starting for its first call", service.name)
        deadline = now + self.settings.preset_wake_timeout_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            service = await self.router.service(service.id, fresh=True)
            if service is None:
                break
            if service.callable and await self.router.instances(service.id, fresh=True):
                return service
            if service.status == "failed":
                raise OpenAIError(503, f"Preset service '{service.name}' failed to start; try again later.",
                                  code="service_unavailable", retry_after=30)
        raise OpenAIError(503, f"Preset service '{service.name}' is starting (cold start); try again shortly.",
                          code="service_starting", retry_after=10)

    # ------------------------------------------------------------------------------------ checks

    @staticmethod
    def _check_body(body, endpoint: Endpoint):
        """Types and required fields (contracts.openai); ranges are the engine's to check."""
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object", code="invalid_request")
        try:
            return endpoint.request.model_validate({**body, "model": body.get("model") or "-"})
        except ValidationError as exc:
            error = exc.errors()[0]
            param = ".".join(str(p) for p in error.get("loc", ())) or None
            if error.get("type") == "missing":
                raise invalid(f"{param} is required", param=param, code="missing_required_parameter") from None
            reason = error.get("msg", "invalid value").removeprefix("Value error, ")
            raise invalid(f"{param}: {reason}", param=param) from None

    @staticmethod
    def _check_length(body: dict, service: ServiceRef) -> None:
        for param in ("max_tokens", "max_completion_tokens"):
            value = body.get(param)
            if isinstance(value, int) and not isinstance(value, bool) and value > service.max_model_len:
                raise OpenAIError(400, f"{param} ({value}) exceeds the maximum input+output length of "
                                  f"'{service.name}' ({service.max_model_len} tokens).", param=param,
                                  code="context_length_exceeded")

    async def _moderate_input(self, body: dict, service: ServiceRef, endpoint: Endpoint) -> None:
        if not service.content_moderation:
            return
        text, token_prompts = endpoint.input_text(body)
        if token_prompts:   # the gateway has no tokenizer: an instance of the service decodes them
            text = "\n".join([text, *[await self._detokenize(service, ids) for ids in token_prompts]])
        verdict = (await self.moderation.checker()).check(text)
        if verdict.blocked:
            raise OpenAIError(400, "The request was blocked by content moderation: the input contains "
                              "non-compliant content.", param=endpoint.input_param, code="content_filter")

    async def _detokenize(self, service: ServiceRef, ids: list[int]) -> str:
        instance, response = await self._send(service, {"tokens": ids}, "/detokenize")
        try:
            body = await response.read()
        except UpstreamBroken as exc:
            raise OpenAIError(502, f"The model service failed to answer: {exc}", code="upstream_error") from None
        finally:
            response.release()
            self.router.release(instance)
        if response.status == 400:   # a token id the model does not have: the instance names it
            raise OpenAIError(400, json.loads(body)["error"]["message"].replace("tokens:", "prompt:"),
                              param="prompt", code="invalid_parameter")
        if response.status != 200:
            raise OpenAIError(502, "The model service failed to decode the prompt's token ids.",
                              code="upstream_error")
        return json.loads(body)["prompt"]

    async def _limit(self, caller: Caller, service: ServiceRef) -> None:
        # A preset service is shared by every tenant: its QPS limit applies to each user separately.
        key = f"{service.id}:{caller.user_id}" if service.preset else service.id
        wait = await self.limiter.acquire(key, service.qps_limit)
        if wait is not None:
            raise OpenAIError(429, f"Too many requests: the QPS limit of '{service.name}' is "
                              f"{service.qps_limit} requests per second.", code="rate_limit_exceeded",
                              retry_after=wait)

    # ------------------------------------------------------------------------------------ call

    async def chat(self, caller: Caller, body, *, service_id: str | None = None,
                   interactive: bool = False) -> Response:
        """``interactive``: a person chatting (the playground): without max_tokens the answer may be
        as long as contracts.openai.interactive_max_tokens, not the API's default of 16 tokens."""
        return await self.call(CHAT, caller, body, service_id=service_id, interactive=interactive)

    async def completions(self, caller: Caller, body, *, service_id: str | None = None) -> Response:
        """OpenAI's legacy ``/v1/completions``: the same checks, limits, metering and moderation as chat."""
        return await self.call(COMPLETIONS, caller, body, service_id=service_id)

    async def call(self, endpoint: Endpoint, caller: Caller, body, *, service_id: str | None = None,
                   interactive: bool = False) -> Response:
        request = self._check_body(body, endpoint)
        service = await self.resolve(caller, service_id=service_id, model=body.get("model"))
        if interactive and request.max_tokens is None and getattr(request, "max_completion_tokens", None) is None:
            default = interactive_max_tokens(service.max_model_len)
            body = {**body, "max_tokens": default}
            request = request.model_copy(update={"max_tokens": default})
        reservation = NO_RESERVATION
        try:
            self._check_length(body, service)
            await self.key_limits.admit(caller)   # the key's own requests/tokens per minute
            if service.preset:  # before a cold start: a caller without quota must not wake the preset
                reservation = await quota_calls.reserve(self.ledger, user_id=caller.user_id, service=service,
                                                        bound=endpoint.bound(body, request, service))
            service = await self.ensure_callable(caller, service)
            await self._moderate_input(body, service, endpoint)
            await self._limit(caller, service)
        except BaseException as exc:
            reservation.release()
            if isinstance(exc, OpenAIError):
                self.meter.call(service=service, instance_id="-", ok=False, latency_ms=0, rejected=True)
            raise
        payload = {**body, "model": service.name}
        call = ChatTelemetry(request=request, model=service.name, messages=endpoint.input_messages(body),
                             capture_content=self.settings.telemetry_capture_content, operation=endpoint.operation)
        try:
            if body.get("stream"):
                return await self._stream(caller, service, body, payload, reservation, call, endpoint)
            return await self._complete(caller, service, payload, reservation, call, endpoint)
        except BaseException as exc:
            reservation.release()   # no answer (a settled reservation is not touched again)
            call.fail(exc)          # an ended call (the answer came) is not touched again either
            raise

    async def _send(self, service: ServiceRef, payload: dict, path: str, *,
                    caller: Caller | None = None) -> tuple[InstanceRef, UpstreamResponse]:
        """Send to ``path`` of the least busy ready instance; on a refused connection try the next one.
        The instance keeps the prefix caches of ``caller``'s account apart from every other's."""
        content = json.dumps(payload, ensure_ascii=False).encode()
        instances = await self.router.instances(service.id)
        tried: set[str] = set()
        refreshed = False
        while True:
            instance = self.router.pick(instances, exclude=tried)
            if instance is None:
                if not refreshed:  # the cached view may predate a scale-out or a restart
                    refreshed = True
                    instances = await self.router.instances(service.id, fresh=True)
                    continue
                raise OpenAIError(503, f"Service '{service.name}' has no ready instance right now; try again.",
                                  code="no_ready_instance", retry_after=1)
            self.router.acquire(instance)
            try:
                return instance, await self.upstream.post_json(
                    f"{instance.url}{path}", content, secret=instance.secret,
                    cache_salt=caller.tenant_id if caller is not None else "")
            except InstanceUnreachable:
                self.router.release(instance)
                tried.add(instance.id)
            except UpstreamTimeout:
                self.router.release(instance)
                raise OpenAIError(504, f"Service '{service.name}' did not answer in time.", code="timeout") from None
            except UpstreamBroken as exc:
                self.router.release(instance)
                raise OpenAIError(502, f"The model service failed to answer: {exc}", code="upstream_error") from None
            except BaseException:
                self.router.release(instance)
                raise

    def _upstream_error(self, service: ServiceRef, instance: InstanceRef, response_body: bytes, status: int,
                        started: float) -> Response:
        self.meter.call(service=service, instance_id=instance.id, ok=False,
                        latency_ms=(time.monotonic() - started) * 1000)
        try:
            parsed = json.loads(response_body)
            ok_shape = isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
        except ValueError:
            ok_shape = False
        if not ok_shape:
            return OpenAIError(status if status >= 400 else 502, "The model service failed to answer: "
                               + response_body[:200].decode("utf-8", "replace"), code="upstream_error").response()
        return Response(response_body, status_code=status, media_type="application/json",
                        headers={"X-MaaS-Instance": instance.id})

    async def _complete(self, caller: Caller, service: ServiceRef, payload: dict,
                        reservation: Reservation, call: ChatTelemetry, endpoint: Endpoint) -> Response:
        started = time.monotonic()
        instance, response = await self._send(service, payload, endpoint.path, caller=caller)
        call.instance(instance.url)
        try:
            body = await response.read()
        except UpstreamBroken as exc:
            raise OpenAIError(502, f"The model service failed to answer: {exc}", code="upstream_error") from None
        finally:
            response.release()
            self.router.release(instance)
        if response.status != 200:
            reservation.release()   # the instance refused the call: nothing generated
            call.end(error_type=str(response.status))
            return self._upstream_error(service, instance, body, response.status, started)
        data = json.loads(body)
        usage = data.get("usage")
        prompt, completion = _token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens")
        latency = (time.monotonic() - started) * 1000
        # The tokens were spent even if the answer is withheld below: they count.
        self.meter.usage(caller=caller, service=service, prompt_tokens=prompt, completion_tokens=completion)
        self.key_limits.spent(caller, prompt + completion)
        reservation.settle(prompt + completion)
        blocked = service.content_moderation and await self._output_blocked(data, endpoint)
        self.meter.call(service=service, instance_id=instance.id, ok=not blocked, latency_ms=latency,
                        prompt_tokens=prompt, completion_tokens=completion, cached_tokens=_cached_count(usage))
        choices = [c for c in data.get("choices") or [] if isinstance(c, dict)]
        call.end(input_tokens=prompt, output_tokens=completion, response_id=data.get("id"),
                 response_model=data.get("model"),
                 finish_reasons={c.get("index", i): c["finish_reason"] for i, c in enumerate(choices)
                                 if isinstance(c.get("finish_reason"), str)},
                 texts={c.get("index", i): endpoint.answer_text(c) or ""
                        for i, c in enumerate(choices)} if call.capture_content else None,
                 error_type="content_filter" if blocked else None)
        if blocked:
            raise OpenAIError(400, "The answer was blocked by content moderation: the output contains "
                              "non-compliant content.", code="content_filter")
        return Response(body, media_type="application/json", headers={"X-MaaS-Instance": instance.id})

    async def _output_blocked(self, data: dict, endpoint: Endpoint) -> bool:
        checker = await self.moderation.checker()
        for choice in data.get("choices") or []:
            content = endpoint.answer_text(choice or {})
            if isinstance(content, str) and checker.check(content).blocked:
                return True
        return False

    async def _stream(self, caller: Caller, service: ServiceRef, body: dict, payload: dict,
                      reservation: Reservation, call: ChatTelemetry, endpoint: Endpoint) -> Response:
        started = time.monotonic()
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        instance, response = await self._send(service, payload, endpoint.path, caller=caller)
        call.instance(instance.url)
        if response.status != 200:
            try:
                error_body = await response.read()
            except UpstreamBroken:
                error_body = b""
            finally:
                response.release()
                self.router.release(instance)
            reservation.release()   # the instance refused the call: nothing generated
            call.end(error_type=str(response.status))
            return self._upstream_error(service, instance, error_body, response.status, started)
        checker = await self.moderation.checker() if service.content_moderation else None
        return self._relayed(caller=caller, service=service, instance=instance, response=response, started=started,
                             wants_usage=wants_usage, checker=checker, reservation=reservation, call=call,
                             endpoint=endpoint)

    def _relayed(self, *, caller: Caller, service: ServiceRef, instance: InstanceRef, response: UpstreamResponse,
                 started: float, wants_usage: bool, checker, reservation: Reservation,
                 call: ChatTelemetry, endpoint: Endpoint = CHAT) -> _RelayedStream:
        stream = _SseRelay(wants_usage=wants_usage, checker=checker, keep_texts=call.capture_content,
                           prompt_tokens=_header_count(response.headers.get(PROMPT_TOKENS_HEADER)),
                           endpoint=endpoint)

        def finish() -> None:
            self._finish_stream(caller=caller, service=service, instance=instance, response=response, stream=stream,
                                reservation=reservation, started=started, call=call)
        return _RelayedStream(
            self._relay(instance=instance, response=response, stream=stream, finish=finish), on_close=finish,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-MaaS-Instance": instance.id})

    async def _relay(self, *, instance: InstanceRef, response: UpstreamResponse, stream: _SseRelay, finish):
        """Forward each read from the instance at once, as one write (a fast instance's several
        events in one read go out together: fewer syscalls, never a wait for more)."""
        pending = b""
        try:
            async for block in response.blocks():
                *lines, pending = (pending + block).split(b"\n")
                out = []
                for line in lines:
                    piece = stream.line(line.rstrip(b"\r"))
                    if piece:
                        out.append(piece)
                    if stream.ended:
                        break
                if out:
                    yield b"".join(out)
                if stream.ended:
                    return
        except UpstreamBroken as exc:
            stream.ok, stream.error_type = False, "upstream_error"
            log.warning("stream from instance %s broke: %s", instance.id, exc)
            error = {"error": {"message": "The model service stopped answering mid-stream.",
                               "type": "server_error", "param": None, "code": "upstream_error"}}
            yield f"data: {json.dumps(error)}\n\n".encode()
        finally:
            finish()

    def _finish_stream(self, *, caller: Caller, service: ServiceRef, instance: InstanceRef,
                       response: UpstreamResponse, stream: _SseRelay, reservation: Reservation,
                       started: float, call: ChatTelemetry) -> None:
        """Once, however the stream ended (done, upstream broken, client gone, never started)."""
        if stream.finished:
            return
        stream.finished = True
        response.release()
        self.router.release(instance)
        usage = stream.usage
        # Without the final usage chunk (the client went away, the instance broke off), bill the
        # prompt the instance announced in its headers and what was streamed.
        prompt = _token_count(usage, "prompt_tokens") if usage else stream.prompt_tokens
        completion = _token_count(usage, "completion_tokens") if usage else stream.streamed
        if prompt or completion:
            self.meter.usage(caller=caller, service=service, prompt_tokens=prompt, completion_tokens=completion)
            self.key_limits.spent(caller, prompt + completion)
        reservation.settle(prompt + completion)
        now = time.monotonic()
        self.meter.call(service=service, instance_id=instance.id, ok=stream.ok,
                        latency_ms=(now - started) * 1000,
                        ttft_ms=(stream.first_at - started) * 1000 if stream.first_at else None,
                        prompt_tokens=prompt, completion_tokens=completion, cached_tokens=_cached_count(usage))
        call.end(input_tokens=prompt, output_tokens=completion, response_id=stream.response_id,
                 response_model=stream.response_model, finish_reasons=stream.finish_reasons,
                 first_token_at=stream.first_at, texts=stream.texts if call.capture_content else None,
                 error_type=None if stream.ok else stream.error_type)


class _RelayedStream(StreamingResponse):
    """A relayed stream whose ``on_close`` runs when the response ends, however it ends: also when
    the client left before the first chunk, so the relay generator never started (its own
    ``finally`` then never runs)."""

    def __init__(self, content, *, on_close, **kwargs):
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()   # runs the relay's finally now if it is suspended
            finally:
                self.on_close()


class _SseRelay:
    """What the gateway does to each line of an instance's SSE stream.

    Notes the usage, the first token's time, the answer's id, model and finish reasons (and its text
    when moderation or the operator's telemetry setting needs it), drops the usage chunk the client did not ask for,
    checks the answer against content moderation (ending the stream with ``content_filter`` on a
    match) and otherwise passes every event through as it came.
    """

    def __init__(self, *, wants_usage: bool, checker, prompt_tokens: int = 0, keep_texts: bool = False,
                 endpoint: Endpoint = CHAT):
        self.wants_usage, self.checker = wants_usage, checker
        self.endpoint = endpoint
        self.keep_texts = keep_texts or checker is not None
        self.prompt_tokens = prompt_tokens   # as the instance announced it before the first chunk
        self.finished = False
        self.window = getattr(checker, "window", 0)
        self.texts: dict[int, str] = defaultdict(str)
        self.first_at: float | None = None
        self.usage: dict | None = None
        self.streamed = 0
        self.ok = True
        self.error_type = "upstream_error"   # why the stream failed, when it did
        self.ended = False
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: dict[int, str] = {}

    def line(self, line: bytes) -> bytes | None:
        if not line:
            return None
        if not line.startswith(b"data:"):
            return line + b"\n\n"   # SSE comments and event names pass through
        data = line[5:].lstrip()
        if data == b"[DONE]":
            return b"data: [DONE]\n\n"
        try:
            chunk = json.loads(data)
        except ValueError:
            return line + b"\n\n"
        if self.first_at is None:
            self.first_at = time.monotonic()
        if "error" in chunk:
            self.ok = False
            return line + b"\n\n"
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if self.response_id is None:
            self.response_id, self.response_model = chunk.get("id"), chunk.get("model")
        choices = chunk.get("choices") or []
        for choice in choices:
            delta = choice.get("delta") or {}
            piece = self.endpoint.piece_text(choice)
            index = choice.get("index", 0)
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reasons[index] = choice["finish_reason"]
            if piece or delta.get("tool_calls"):
                self.streamed += 1
            if self.keep_texts and isinstance(piece, str) and piece:
                self.texts[index] += piece
            if self.checker is not None and isinstance(piece, str) and piece:
                tail = self.texts[index][-(self.window + len(piece)):]
                if self.checker.check(tail).blocked:
                    self.ok, self.ended, self.error_type = False, True, "content_filter"
                    self.finish_reasons[index] = "content_filter"
                    return _filtered_chunk(chunk, index) + b"data: [DONE]\n\n"
        if not self.wants_usage and "usage" in chunk:
            if not choices:
                return None  # the usage-only chunk the gateway asked for on its own behalf
            chunk.pop("usage")
            return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
        return line + b"\n\n"


def _filtered_chunk(chunk: dict, index: int) -> bytes:
    """End one choice with finish_reason content_filter (the blocked text itself is not sent)."""
    stop = {key: chunk[key] for key in ("id", "object", "created", "model") if key in chunk}
    stop["choices"] = [{"index": index, "delta": {}, "finish_reason": "content_filter"}]
    return f"data: {json.dumps(stop, ensure_ascii=False)}\n\n".encode()


# ------------------------------------------------------------------------------------ per process

def build_gateway(platform: Platform) -> ChatGateway:
    """The gateway service's component: one per process, built by the composition root."""
    return ChatGateway(platform)


Gateway = Depends(get_component("gateway"))   # the routes' way to this process's ChatGateway


async def run_gateway(gateway: ChatGateway) -> None:
    """Background task: write metered usage every second and keep the gateway's views of the
    database fresh (so calls do not wait on it); flush and close on shutdown."""
    views = [*gateway.router.views, gateway.moderation.view, keys.callers()]
    period = max(0.05, min(v.max_age for v in views) / 4)
    refresher = asyncio.create_task(keep_fresh(views, period=period), name="gateway-views")
    try:
        while True:
            await asyncio.sleep(gateway.settings.usage_flush_seconds)
            await gateway.meter.flush()
            await gateway.key_limits.flush()
            await gateway.ledger.flush()
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        await gateway.close()
