"""Grammar-constrained decoding: ``response_format`` JSON and tool calls always parse.

xgrammar (the library vLLM and SGLang use) compiles a JSON Schema against the model's vocabulary;
each generated sequence gets its own matcher, which before every token says which tokens may come
next (a bitmask over the vocabulary). The engine samples on the host with numpy, so the mask is
applied there: after the penalties, disallowed logits become -inf, then temperature/top-k/top-p pick
among the rest, and the chosen token advances the matcher. EOS is allowed only once the JSON is
complete, so a sequence ends either with a whole value ("stop") or cut by max_tokens ("length").
Tool calls use the same machinery with an xgrammar structural tag (``ToolGrammar``).

xgrammar silently ignores JSON Schema keywords it cannot enforce (``not``, ``uniqueItems``, ...);
an output that ignores them may not validate. ``check_schema`` therefore admits only keywords known
to be enforced and refuses the others by name (fail closed), before anything is compiled.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.lib.inference.params import InvalidParameter
from services.lib.inference.tool_calls import CLOSE, OPEN

PARAM = "response_format"

# Compiled grammars are cached by xgrammar's compiler (an LRU keyed by the schema or tag text),
# bounded in bytes: a compiled grammar keeps token masks for its states, which grow with the vocabulary.
CACHE_BYTES = 64 << 20

# Keywords that change nothing about which JSON is valid.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                          "deprecated", "readOnly", "writeOnly"})
# Keywords xgrammar enforces (checked against it: a violating instance is refused by the matcher).
_ENFORCED = frozenset({"type", "enum", "const", "properties", "required", "additionalProperties", "items",
                       "prefixItems", "minItems", "maxItems", "minProperties", "maxProperties", "minLength",
                       "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
                       "exclusiveMaximum", "anyOf", "$ref", "$defs", "definitions"})
_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
# String formats xgrammar turns into grammar rules; any other format would be ignored.
_FORMATS = frozenset({"email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname", "uuid",
                      "uri", "uri-reference", "uri-template", "json-pointer", "relative-json-pointer"})
_HINTS = {"oneOf": "use anyOf", "allOf": "merge the subschemas into one",
          "items": "a list of item schemas is written prefixItems"}


def _schema_text(schema: Any) -> str:
    # Key order kept: it is the order in which properties are generated.
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class JsonGrammar:
    """response_format: the output is any JSON object, or JSON valid against one schema."""
    schema: str | None     # JSON text of the schema; None: any JSON object (json_object)
    # A stop string inside the JSON would cut it short: refused (SamplingParams).
    stop_allowed = False

    @classmethod
    def from_schema(cls, schema: Any) -> JsonGrammar:
        check_schema(schema)
        return cls(_schema_text(schema))


NO_ARGUMENTS = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolGrammar:
    """Tool calls (``<tool_call>{"name", "arguments"}</tool_call>``) naming a given function, with
    arguments valid against its parameters' schema.

    ``mode``: "auto" leaves text free until the model opens a call; "required" allows only calls
    (one or more); "named" exactly one call of the one function in ``tools``. ``single``: at most
    one call (parallel_tool_calls false); the answer ends after it. ``prefix``: the start of the
    answer already written into the prompt (services.lib.inference.chat), which the matcher passes
    before the first generated token.
    """
    tools: tuple[tuple[str, str], ...]     # (function name, arguments schema as JSON text)
    mode: str
    prefix: str = ""
    single: bool = False
    stop_allowed = True    # a call cut by a stop string goes out as content, as without a grammar

    @classmethod
    def for_request(cls, tools, tool_choice, prefix: str, *, single: bool = False) -> ToolGrammar:
        """From the request's tools (contracts.openai.Tool). A function with ``strict: true`` must
        have a schema constrained decoding enforces (else 400); without it, a schema that cannot be
        enforced falls back to "any JSON object" (best effort, as OpenAI does without strict)."""
        named = getattr(getattr(tool_choice, "function", None), "name", None)
        mode = "named" if named else "required" if tool_choice == "required" else "auto"
        out = []
        for i, tool in enumerate(tools):
            fn = tool.function
            if named and fn.name != named:
                continue
            schema = fn.parameters if fn.parameters is not None else NO_ARGUMENTS
            where = f"tools[{i}].function.parameters"
            try:
                check_schema(schema, param=where)
                if not isinstance(schema, dict) or schema.get("type", "object") != "object":
                    raise InvalidParameter(where, f"{where} must describe an object (the call's arguments)",
                                           code="unsupported_schema")
            except InvalidParameter:
                if fn.strict:
                    raise
                schema = {"type": "object"}
            out.append((fn.name, _schema_text(schema)))
        return cls(tuple(out), mode, prefix, single or mode == "named")


@dataclass(frozen=True)
class Compiled:
    """A grammar compiled for one model's vocabulary, with what it was made from."""
    spec: JsonGrammar | ToolGrammar
    grammar: Any          # xgrammar.CompiledGrammar

    @property
    def stop_allowed(self) -> bool:
        return self.spec.stop_allowed


def _pointer(path: tuple) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path) if path else "the root"


def check_schema(schema: Any, *, param: str = PARAM) -> None:
    """Raise InvalidParameter naming every part of ``schema`` that constrained decoding cannot enforce.

    ``param``: the request field the schema came from, named in the error."""
    problems: list[str] = []
    _walk(schema, (), problems)
    if problems:
        shown = "; ".join(problems[:8]) + ("; ..." if len(problems) > 8 else "")
        where = "response_format.json_schema.schema" if param == PARAM else param
        raise InvalidParameter(param, f"{where} uses JSON Schema features that constrained decoding cannot "
                                      f"enforce: {shown}", code="unsupported_schema")


def _walk(node: Any, path: tuple, problems: list[str]) -> None:
    where = _pointer(path)
    if isinstance(node, bool):
        if node is False:
            problems.append(f"the schema `false` at {where} (nothing could be generated)")
        return
    if not isinstance(node, dict):
        problems.append(f"{where} is not a schema (an object or true)")
        return
    for key in node:
        if key not in _ENFORCED and key not in _ANNOTATIONS:
            hint = _HINTS.get(key)
            problems.append(f"'{key}' at {where}" + (f" ({hint})" if hint else ""))
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for k in kinds:
        if k not in _TYPES:
            problems.append(f"type {k!r} at {where}")
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            problems.append(f"'$ref' {ref!r} at {where} (only local references, '#/...', are followed)")
        siblings = sorted(set(node) - _ANNOTATIONS - {"$ref", "$defs", "definitions"})
        if siblings:
            problems.append(f"{', '.join(repr(s) for s in siblings)} beside '$ref' at {where} "
                            "(ignored next to a reference: move them into the referenced schema)")
    if "pattern" in node and ("minLength" in node or "maxLength" in node):
        problems.append(f"'pattern' with 'minLength'/'maxLength' at {where} (the lengths would be ignored: "
                        "write them into the pattern)")
    if "format" in node and node["format"] not in _FORMATS:
        problems.append(f"format {node['format']!r} at {where} (supported: {', '.join(sorted(_FORMATS))})")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(key), bool):
            problems.append(f"boolean '{key}' at {where} (write the bound itself, as in draft 2020-12)")
    properties = node.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            _walk(sub, (*path, "properties", name), problems)
        missing = [r for r in node.get("required", []) if r not in properties]
        if missing:
            problems.append(f"'required' at {where} names {', '.join(repr(m) for m in missing)}, not in "
                            "'properties' (it would not be generated)")
    elif node.get("required"):
        problems.append(f"'required' without 'properties' at {where} (the properties would not be generated)")
    for key in ("additionalProperties", "items"):
        sub = node.get(key)
        if isinstance(sub, dict):
            _walk(sub, (*path, key), problems)
        elif key == "items" and isinstance(sub, list):
            problems.append(f"a list as 'items' at {where} ({_HINTS['items']})")
    for key in ("prefixItems", "anyOf"):
        subs = node.get(key)
        if isinstance(subs, list):
            for i, sub in enumerate(subs):
                _walk(sub, (*path, key, i), problems)
    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                _walk(sub, (*path, key, name), problems)


_LOCATION = re.compile(r"^\[[\d:.]+\]\s+\S+:\d+:\s*")   # xgrammar's "[time] file.cc:line: " prefix


class Grammars:
    """Compiles grammars for one model's vocabulary; thread-safe (xgrammar's compiler is)."""

    def __init__(self, load_tokenizer, *, vocab_size: int, stop_ids, cache_bytes: int = CACHE_BYTES):
        """``load_tokenizer``: returns the model's HF tokenizer (called once, on first use)."""
        self._load_tokenizer, self.vocab_size, self._stop_ids = load_tokenizer, vocab_size, sorted(stop_ids)
        self._cache_bytes = cache_bytes
        self._compiler = None
        self._lock = threading.Lock()

    def _ready(self):
        # Built on first use: reading a 150k vocabulary takes a moment most instances never need.
        with self._lock:
            if self._compiler is None:
                import xgrammar as xgr

                info = xgr.TokenizerInfo.from_huggingface(self._load_tokenizer(), vocab_size=self.vocab_size,
                                                          stop_token_ids=self._stop_ids)
                self._compiler = xgr.GrammarCompiler(info, max_threads=2, cache_limit_bytes=self._cache_bytes)
            return self._compiler

    def compile(self, spec: JsonGrammar | ToolGrammar) -> Compiled:
        """The compiled grammar (cached); InvalidParameter naming the request field when it cannot be."""
        compiler = self._ready()
        # Compact separators, no free whitespace: a small model can otherwise spend its whole budget on
        # blank lines between tokens, which the grammar would have to allow.
        try:
            if isinstance(spec, ToolGrammar):
                return Compiled(spec, compiler.compile_structural_tag(_tool_tag(spec)))
            if spec.schema is None:
                return Compiled(spec, compiler.compile_json_schema('{"type": "object"}', any_whitespace=False))
            return Compiled(spec, compiler.compile_json_schema(spec.schema, any_whitespace=False, strict_mode=True))
        except Exception as exc:   # xgrammar raises RuntimeError/ValueError with the converter's reason
            text = str(exc).strip()
            reason = _LOCATION.sub("", text.splitlines()[0]) if text else type(exc).__name__
            param, where = ((PARAM, "response_format.json_schema.schema") if isinstance(spec, JsonGrammar)
                            else ("tools", "the tools' parameters"))
            raise InvalidParameter(param, f"{where} cannot be used for constrained decoding: {reason}",
                                   code="invalid_schema") from None

    def matcher(self, compiled: Compiled) -> Matcher:
        return Matcher(compiled.grammar, self.vocab_size, prefix=getattr(compiled.spec, "prefix", ""))


def _tool_tag(spec: ToolGrammar):
    """xgrammar structural tag: each call is its fixed opening, the arguments' grammar, its closing."""
    import xgrammar as xgr
    from xgrammar import structural_tag as st

    # The closing tag on its own line (as the prompt shows it) or right after the object, as models
    # also write it: both parse (tool_calls.py).
    tags = [st.TagFormat(begin=f'{OPEN}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": ',
                         content=st.GrammarFormat(grammar=str(xgr.Grammar.from_json_schema(
                             schema, any_whitespace=False, strict_mode=True))),
                         end=[f"}}\n{CLOSE}", f"}}{CLOSE}"])
            for name, schema in spec.tools]
    if spec.mode == "auto":
        return st.StructuralTag(format=st.TriggeredTagsFormat(triggers=[OPEN], tags=tags,
                                                              stop_after_first=spec.single))
    calls = st.TagsWithSeparatorFormat(tags=tags, separator="\n", at_least_one=True, stop_after_first=spec.single)
    # A newline may end the answer as well as separate calls: were it only a separator, a model that
    # writes one after its call would be forced into another call.
    return st.StructuralTag(format=st.SequenceFormat(elements=[
        calls, st.OptionalFormat(content=st.ConstStringFormat(value="\n"))]))


class Matcher:
    """One sequence's position in its grammar: masks the next token's logits and follows the choice."""

    def __init__(self, compiled, vocab_size: int, *, prefix: str = ""):
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled)
        if prefix and not self._matcher.accept_string(prefix):
            raise ValueError(f"the grammar does not admit its own forced prefix {prefix!r}")
        self._vocab = vocab_size
        self._bitmask = np.zeros((1, (vocab_size + 31) // 32), dtype=np.int32)

    def allowed(self) -> np.ndarray:
        """Which tokens may come next, as a (V,) bool array."""
        self._matcher.fill_next_token_bitmask(self._bitmask, 0)
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")
        return bits[: self._vocab].view(bool)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` with every token the grammar forbids at -inf (a new array; the input stays)."""
        n = min(len(logits), self._vocab)
        allowed = self.allowed()[:n]
        out = np.full(len(logits), -np.inf, dtype=np.float32)
        if np.count_nonzero(allowed) < n // 16:
            # JSON punctuation, keys, enums: a handful of tokens; copying just those is ~10x cheaper.
            ids = np.flatnonzero(allowed)
            out[ids] = logits[ids]
        else:                    # inside a string or free text: most of the vocabulary
            np.copyto(out[:n], logits[:n], where=allowed)
        return out

    def accept(self, token: int) -> bool:
        """Advance past ``token``; False if the grammar does not allow it (the mask prevents that)."""
        return bool(self._matcher.accept_token(int(token)))
