"""OpenAI-compatible chat completion schemas (guide chapter 11, tables 11-1 and 11-2; vLLM's API).

Shared by the per-instance inference server and the gateway. Types and defaults only: the ranges and
cross-field rules of the sampling parameters are checked by the engine (services.lib.inference.params),
which names the offending parameter in an OpenAI error body. Unknown request fields are ignored, as
vLLM does, so clients that send extra OpenAI fields keep working; but a known field that would change
the answer and is not implemented (``REFUSED_FIELDS``) is refused with a 400 naming it, never dropped.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

# Table 11-1's default completion length: what /v1 uses when a call names none (as OpenAI and vLLM do).
API_DEFAULT_MAX_TOKENS = 16
# Interactive tools (the playground, `maas chat`) default to a useful answer length instead: 16 tokens
# cut almost every answer off mid-sentence. At most half the service's context, so a default never makes
# a call too long for a small model.
INTERACTIVE_MAX_TOKENS = 512


def interactive_max_tokens(max_model_len: int | None) -> int:
    """The completion length an interactive chat asks for when its user names none."""
    if not max_model_len or max_model_len <= 1:
        return INTERACTIVE_MAX_TOKENS
    return max(1, min(INTERACTIVE_MAX_TOKENS, max_model_len // 2))


# -- request ---------------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="JSON text of the arguments, as OpenAI sends them")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = Field(None, description="Refuse (400) parameters that constrained decoding cannot "
                                                  "enforce, instead of constraining to any JSON object")


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


# Response header of a model instance's streamed answer: the prompt's token count, known before
# the first chunk, so a stream cut off before its usage chunk is still billed for its prompt.
PROMPT_TOKENS_HEADER = "X-MaaS-Prompt-Tokens"


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJsonObject(BaseModel):
    """Any JSON object: the output always parses (unless max_tokens cuts it)."""
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    # ``schema`` is a BaseModel attribute: the field is schema_ under the wire name "schema".
    schema_: dict[str, Any] | bool | None = Field(None, alias="schema")
    strict: bool | None = Field(None, description="The schema is always enforced (constrained decoding)")


class ResponseFormatJsonSchema(BaseModel):
    """JSON that validates against ``json_schema.schema``, enforced while generating."""
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema,
                           Field(discriminator="type")]

# OpenAI and vLLM request fields that would change the answer and are not implemented: refused (400
# naming the field) when they carry anything but their "no effect" value, rather than dropped.
REFUSED_FIELDS: dict[str, str] = {
    "functions": "use tools", "function_call": "use tool_choice", "logit_bias": "",
    "audio": "", "prediction": "", "web_search_options": "", "reasoning_effort": "", "verbosity": "",
    "min_tokens": "", "min_p": "", "stop_token_ids": "", "bad_words": "", "allowed_token_ids": "",
    "guided_json": "use response_format", "guided_regex": "", "guided_choice": "", "guided_grammar": "",
    "guided_decoding_backend": "", "structured_outputs": "use response_format", "echo": "",
    "continue_final_message": "", "chat_template": "", "chat_template_kwargs": "", "documents": "",
    "include_stop_str_in_output": "", "prompt_logprobs": "", "truncate_prompt_tokens": "",
    "add_generation_prompt": "", "skip_special_tokens": "", "spaces_between_special_tokens": "",
}
# The value of a refused field that changes nothing (None always does).
_NO_EFFECT: dict[str, Any] = {"echo": False, "continue_final_message": False,
                              "include_stop_str_in_output": False, "min_tokens": 0, "min_p": 0.0,
                              "logit_bias": {}, "stop_token_ids": [], "bad_words": [], "chat_template_kwargs": {},
                              "add_generation_prompt": True, "skip_special_tokens": True,
                              "spaces_between_special_tokens": True}


class ChatCompletionRequest(BaseModel):
    """Table 11-1: defaults as the guide gives them (max_tokens 16, temperature 1.0, top_k -1 ...)."""
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, description="default 16 (table 11-1)")
    max_completion_tokens: int | None = Field(None, description="OpenAI's newer name for max_tokens")
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: str | list[str] | None = None
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    length_penalty: float = 1.0
    ignore_eos: bool = False
    seed: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, description="0-20, requires logprobs")
    user: str | None = None
    response_format: ResponseFormat | None = None
    # Accepted only with the one behaviour this server has: text in, text out.
    modalities: list[Literal["text"]] | None = None
    parallel_tool_calls: bool | None = Field(None, description="false: at most one tool call per answer")
    # Refused fields (REFUSED_FIELDS): declared so that a value is a 400 naming the field.
    functions: SkipJsonSchema[Any] = None
    function_call: SkipJsonSchema[Any] = None
    logit_bias: SkipJsonSchema[Any] = None
    audio: SkipJsonSchema[Any] = None
    prediction: SkipJsonSchema[Any] = None
    web_search_options: SkipJsonSchema[Any] = None
    reasoning_effort: SkipJsonSchema[Any] = None
    verbosity: SkipJsonSchema[Any] = None
    min_tokens: SkipJsonSchema[Any] = None
    min_p: SkipJsonSchema[Any] = None
    stop_token_ids: SkipJsonSchema[Any] = None
    bad_words: SkipJsonSchema[Any] = None
    allowed_token_ids: SkipJsonSchema[Any] = None
    guided_json: SkipJsonSchema[Any] = None
    guided_regex: SkipJsonSchema[Any] = None
    guided_choice: SkipJsonSchema[Any] = None
    guided_grammar: SkipJsonSchema[Any] = None
    guided_decoding_backend: SkipJsonSchema[Any] = None
    structured_outputs: SkipJsonSchema[Any] = None
    echo: SkipJsonSchema[Any] = None
    continue_final_message: SkipJsonSchema[Any] = None
    chat_template: SkipJsonSchema[Any] = None
    chat_template_kwargs: SkipJsonSchema[Any] = None
    documents: SkipJsonSchema[Any] = None
    include_stop_str_in_output: SkipJsonSchema[Any] = None
    prompt_logprobs: SkipJsonSchema[Any] = None
    truncate_prompt_tokens: SkipJsonSchema[Any] = None
    add_generation_prompt: SkipJsonSchema[Any] = None
    skip_special_tokens: SkipJsonSchema[Any] = None
    spaces_between_special_tokens: SkipJsonSchema[Any] = None

    @field_validator(*REFUSED_FIELDS)
    @classmethod
    def _refuse(cls, value, info):
        if value is None or (info.field_name in _NO_EFFECT and value == _NO_EFFECT[info.field_name]):
            return None
        hint = REFUSED_FIELDS[info.field_name]
        raise ValueError("is not supported by this server" + (f" ({hint})" if hint else ""))

    @field_validator("max_completion_tokens")
    @classmethod
    def _one_length(cls, value, info):
        # Two names for one limit (max_tokens is the older): either, or both when they agree.
        other = info.data.get("max_tokens")
        if value is not None and other is not None and value != other:
            raise ValueError(f"max_completion_tokens ({value}) and max_tokens ({other}) differ: they are two "
                             "names for the same limit, give one")
        return value

    def resolved_max_tokens(self) -> int:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        if self.max_tokens is not None:
            return self.max_tokens
        return API_DEFAULT_MAX_TOKENS


# -- response (table 11-2) -------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(0, description="prompt tokens whose KV cache was reused from an earlier request "
                                              "(prefix caching) instead of being computed again")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class TopLogprob(BaseModel):
    token: str
    logprob: float = Field(description="natural log of the probability under the raw model distribution "
                                       "(before temperature, penalties, top-k/top-p), as vLLM reports it")
    bytes: list[int] | None = Field(None, description="the token's UTF-8 bytes (a token may hold part of a character)")


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list, description="the most likely tokens, best first")


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "abort"] | None
    stop_reason: str | int | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "abort"] | None = None
    stop_reason: str | int | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


# -- legacy completions (/v1/completions) ----------------------------------------------------------

# Fields of OpenAI's and vLLM's completions API that would change the answer and are not implemented.
COMPLETION_REFUSED_FIELDS: dict[str, str] = {
    "suffix": "insertion after a suffix is not implemented", "logit_bias": "", "min_tokens": "", "min_p": "",
    "stop_token_ids": "", "bad_words": "", "allowed_token_ids": "", "guided_json": "", "guided_regex": "",
    "guided_choice": "", "guided_grammar": "", "guided_decoding_backend": "", "structured_outputs": "",
    "response_format": "", "include_stop_str_in_output": "", "prompt_logprobs": "use echo with logprobs",
    "truncate_prompt_tokens": "", "use_beam_search": "", "skip_special_tokens": "",
    "spaces_between_special_tokens": "", "prompt_embeds": "",
}
_COMPLETION_NO_EFFECT: dict[str, Any] = {"suffix": "", "include_stop_str_in_output": False, "min_tokens": 0,
                                         "min_p": 0.0, "logit_bias": {}, "stop_token_ids": [], "bad_words": [],
                                         "use_beam_search": False, "skip_special_tokens": True,
                                         "spaces_between_special_tokens": True}
# OpenAI's bound for the legacy ``logprobs`` (the number of alternatives per token).
MAX_COMPLETION_LOGPROBS = 5


class CompletionRequest(BaseModel):
    """OpenAI's legacy completions: ``prompt`` is a string, a list of strings, a list of token ids or a list
    of lists of token ids (one answer, or ``n``, per prompt). ``max_tokens`` 0 with ``echo`` scores the prompt
    only (how evaluation harnesses compute a loglikelihood)."""
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, description="default 16; 0 only with echo")
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: str | list[str] | None = None
    n: int = 1
    best_of: int | None = None
    ignore_eos: bool = False
    seed: int | None = None
    echo: bool = Field(False, description="the answer starts with the prompt (and its tokens' logprobs)")
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS,
                                 description="each token's logprob and this many most likely alternatives")
    user: str | None = None
    suffix: SkipJsonSchema[Any] = None
    logit_bias: SkipJsonSchema[Any] = None
    min_tokens: SkipJsonSchema[Any] = None
    min_p: SkipJsonSchema[Any] = None
    stop_token_ids: SkipJsonSchema[Any] = None
    bad_words: SkipJsonSchema[Any] = None
    allowed_token_ids: SkipJsonSchema[Any] = None
    guided_json: SkipJsonSchema[Any] = None
    guided_regex: SkipJsonSchema[Any] = None
    guided_choice: SkipJsonSchema[Any] = None
    guided_grammar: SkipJsonSchema[Any] = None
    guided_decoding_backend: SkipJsonSchema[Any] = None
    structured_outputs: SkipJsonSchema[Any] = None
    response_format: SkipJsonSchema[Any] = None
    include_stop_str_in_output: SkipJsonSchema[Any] = None
    prompt_logprobs: SkipJsonSchema[Any] = None
    truncate_prompt_tokens: SkipJsonSchema[Any] = None
    use_beam_search: SkipJsonSchema[Any] = None
    skip_special_tokens: SkipJsonSchema[Any] = None
    spaces_between_special_tokens: SkipJsonSchema[Any] = None
    prompt_embeds: SkipJsonSchema[Any] = None

    @field_validator(*COMPLETION_REFUSED_FIELDS)
    @classmethod
    def _refuse(cls, value, info):
        name = info.field_name
        if value is None or (name in _COMPLETION_NO_EFFECT and value == _COMPLETION_NO_EFFECT[name]):
            return None
        hint = COMPLETION_REFUSED_FIELDS[name]
        raise ValueError("is not supported by this server" + (f" ({hint})" if hint else ""))

    def resolved_max_tokens(self) -> int:
        return API_DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens

    def prompt_count(self) -> int:
        """How many prompts the call sends (each gets ``n`` answers)."""
        if isinstance(self.prompt, list) and self.prompt and not isinstance(self.prompt[0], int):
            return len(self.prompt)
        return 1


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy shape: parallel lists, one entry per token (a prompt's first token has no logprob)."""
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int] = Field(description="where each token starts in the choice's text")


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "abort"] | None = None
    stop_reason: str | int | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "openmaas"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- tokenizer endpoints of an instance (vLLM's /tokenize and /detokenize) -----------------------------


class TokenizeRequest(BaseModel):
    """Either ``prompt`` (text, encoded as is) or ``messages`` (rendered as a chat call renders them)."""
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    tools: list[Tool] | None = None
    add_special_tokens: bool = Field(True, description="prompt only: add the tokenizer's BOS/EOS as vLLM does")


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeRequest(BaseModel):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


# -- errors ----------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error | not_found_error | rate_limit_error | server_error ...")
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI returns it."""
    return ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code)).model_dump()
