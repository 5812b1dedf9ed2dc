"""Weight validation (权重校验) for user-uploaded HF folders, guide table 5-4.

Pure and synchronous: the registry worker runs ``validate_weights`` in a job process (registry.work) and stores the
result in the model version's task record. Checks run in table order and stop at the first
failure; ``message`` is the exact English text of table 5-4 (shown when hovering the failed
status), ``detail`` is the specifics for the log.
"""
from __future__ import annotations

import json
import math
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from services.lib.catalog.templates import CompressionStrategy, Template

# --- Table 5-4 failure messages (verbatim) ---------------------------------------------------
MSG_UNKNOWN = ("Unknown error, please contact the operation and maintenance personnel or check "
               "the log to locate the specific problem.")
MSG_TEMPLATE = "Backend model template selection error (metadata error)."
# Reading the platform's own reference config. Our reference is the template's `structure`, so
# a broken template surfaces as MSG_TEMPLATE; kept for completeness of the table.
MSG_STANDARD_CONFIG = "Failed to read standard config.json in the background."
MSG_GENERATION_CONFIG = "Failed to read generation_config.json."
MSG_DO_SAMPLE = ("The value of do_sample is not set to true in generation_config.json, which is "
                 "inconsistent with the configured sampling parameters such as temperature, "
                 "top_p, top_k etc.")
MSG_USER_CONFIG = "Failed to read user config.json."
MSG_QUANT_MISSING = ("The quantization_config field is missing in config.json, please check "
                     "whether it is awq quantization weight.")
MSG_QUANT_EXTRA = ("There is an extra quantization_config field in config.json. Please check "
                   "whether it is a non-quantized weight.")
MSG_STRUCTURE = ("Key fields describing the model structure are missing from config.json, or "
                 "their values are inconsistent with standard open source.")
MSG_TOKENIZER = "Error loading tokenizer in transformers."
MSG_WEIGHTS = "Error loading weights in transformers."

# Above this total size the weights are verified from file headers against a meta-device model
# instead of being materialised (a 7B fp16 checkpoint would need 14+ GB of RAM on the worker).
MATERIALIZE_LIMIT_BYTES = 2 * 1024**3

# Nested config sections where multimodal models keep their language-model fields.
_NESTED_CONFIGS = ("text_config", "llm_config", "language_config")

# Tensor-name suffixes added by quantized checkpoints (AutoAWQ/GPTQ, compressed-tensors,
# Ascend msModelSlim W8A8). Their shapes depend on the packing, so only names are checked.
_QUANT_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx", "weight_scale", "weight_zero_point",
                   "weight_offset", "weight_packed", "weight_shape", "input_scale",
                   "input_zero_point", "input_offset", "deq_scale", "quant_bias", "smooth_scale")

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
# *.bin / *.safetensors files that are not model weights.
_NON_WEIGHT_PREFIXES = ("training_args", "optimizer", "scheduler", "rng_state", "adapter_model")


class WeightCheckResult(BaseModel):
    ok: bool
    message: str | None = None            # exact table 5-4 text when ok is False
    detail: str | None = None             # specifics for the log
    checks: list[tuple[str, bool]] = Field(default_factory=list)   # (check name, passed), in order


@dataclass
class _Fail(Exception):
    message: str
    detail: str


# --- helpers ----------------------------------------------------------------------------------

def _is_pos_int(v: Any) -> bool:
    return type(v) is int and v > 0   # bool is an int subclass: reject it explicitly


def _field(cfg: dict, name: str) -> Any:
    if name in cfg:
        return cfg[name]
    for section in _NESTED_CONFIGS:
        sub = cfg.get(section)
        if isinstance(sub, dict) and name in sub:
            return sub[name]
    return None


def _read_json(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"top level is {type(data).__name__}, expected an object")
    return data


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_weight_name(p.name))


def _is_weight_name(name: str) -> bool:
    return name.endswith(_WEIGHT_SUFFIXES) and not name.startswith(_NON_WEIGHT_PREFIXES)


def is_hf_folder(names: list[str]) -> bool:
    """True if a listing (names relative to the folder) looks like an HF model folder.

    Only top-level entries count: config.json plus at least one weights file.
    """
    top = {n.removeprefix("./") for n in names}
    top = {n for n in top if "/" not in n}
    return "config.json" in top and any(_is_weight_name(n) for n in top)


# --- checks, in table order -------------------------------------------------------------------

def _check_template(template: Any) -> Template:
    if not isinstance(template, Template):
        raise _Fail(MSG_TEMPLATE, f"template is {type(template).__name__}, not a Template")
    try:   # re-validate: a model_construct()-ed or mutated template skips pydantic validation
        t = Template.model_validate(template.model_dump())
    except Exception as e:  # noqa: BLE001 - any validation problem is a metadata error
        raise _Fail(MSG_TEMPLATE, f"template {getattr(template, 'id', '?')!r} invalid: {e}") from e
    problems = []
    if not t.hf_model_types:
        problems.append("hf_model_types is empty")
    if not t.architectures:
        problems.append("architectures is empty")
    for k, v in (t.structure or {}).items():
        if not _is_pos_int(v):
            problems.append(f"structure[{k!r}]={v!r} is not a positive int")
    if problems:
        raise _Fail(MSG_TEMPLATE, f"template {t.id!r}: " + "; ".join(problems))
    return t


def _check_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise _Fail(MSG_USER_CONFIG, f"{path} does not exist")
    try:
        return _read_json(path)
    except (OSError, ValueError) as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Fail(MSG_USER_CONFIG, f"{path}: {e}") from e


def _check_quantization(cfg: dict, t: Template) -> None:
    qc = cfg.get("quantization_config")
    if t.quantization is None:
        if qc is not None:
            raise _Fail(MSG_QUANT_EXTRA, f"template {t.id!r} is not quantized but config.json has "
                                         f"quantization_config {json.dumps(qc)[:200]}")
        return
    if not isinstance(qc, dict):
        raise _Fail(MSG_QUANT_MISSING, f"template {t.id!r} expects {t.quantization} weights; "
                                       "config.json has no quantization_config object")
    method = str(qc.get("quant_method", "")).lower()
    if t.quantization is CompressionStrategy.awq_w4a16 and method != "awq":
        raise _Fail(MSG_QUANT_MISSING, f"template {t.id!r} expects awq; quant_method={method!r}")


def _check_structure(cfg: dict, t: Template) -> None:
    problems = []
    model_type = cfg.get("model_type")
    if model_type not in t.hf_model_types:
        problems.append(f"model_type {model_type!r} not in {t.hf_model_types}")
    archs = cfg.get("architectures")
    if not isinstance(archs, list) or not set(archs) & set(t.architectures):
        problems.append(f"architectures {archs!r} do not include any of {t.architectures}")
    dims = {}
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        dims[name] = v = _field(cfg, name)
        if not _is_pos_int(v):
            problems.append(f"{name}={v!r} is not a positive int")
    heads, hidden = dims["num_attention_heads"], dims["hidden_size"]
    if _is_pos_int(heads) and _is_pos_int(hidden):
        # Models with an explicit head_dim (Gemma, Qwen3) need not satisfy hidden % heads == 0.
        if _field(cfg, "head_dim") is None and hidden % heads:
            problems.append(f"hidden_size {hidden} not divisible by num_attention_heads {heads}")
        kv = _field(cfg, "num_key_value_heads")
        if kv is not None and (not _is_pos_int(kv) or heads % kv):
            problems.append(f"num_key_value_heads {kv!r} does not divide num_attention_heads {heads}")
    for name, want in (t.structure or {}).items():
        got = _field(cfg, name)
        if got != want or type(got) is bool:
            problems.append(f"{name}={got!r}, template {t.id!r} pins {want}")
    if problems:
        raise _Fail(MSG_STRUCTURE, "; ".join(problems))


def _read_generation_config(folder: Path) -> dict | None:
    path = folder / "generation_config.json"
    if not path.exists():
        return None   # optional file
    try:
        gen = _read_json(path)
    except (OSError, ValueError) as e:
        raise _Fail(MSG_GENERATION_CONFIG, f"{path}: {e}") from e
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        v = gen.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _Fail(MSG_GENERATION_CONFIG, f"{path}: {name}={v!r} is not a number")
    return gen


def _sampling_params_set(gen: dict) -> list[str]:
    """Sampling params set to a value that changes sampling, vs transformers' neutral defaults.

    temperature 1.0, top_p/typical_p 1.0, top_k 50 (transformers' default) or 0/-1 (disabled),
    min_p 0 are neutral. temperature 0 means greedy to most servers, consistent with
    do_sample false, so it is not flagged either.
    """
    neutral = {"temperature": (1.0, 0.0), "top_p": (1.0,), "typical_p": (1.0,),
               "top_k": (50, 0, -1), "min_p": (0.0,)}
    return [f"{k}={gen[k]}" for k, ok in neutral.items()
            if gen.get(k) is not None and not any(math.isclose(gen[k], n) for n in ok)]


def _check_do_sample(gen: dict | None) -> None:
    if gen is None or gen.get("do_sample") is True:
        return
    set_params = _sampling_params_set(gen)
    if set_params:
        raise _Fail(MSG_DO_SAMPLE, f"do_sample={gen.get('do_sample')!r} with {', '.join(set_params)}")


def _check_tokenizer(folder: Path, cfg: dict) -> None:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
        ids = tok("Hello, world! 你好，世界。")["input_ids"]
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the tokenizer files do wrong
        raise _Fail(MSG_TOKENIZER, f"{type(e).__name__}: {e}") from e
    vocab = _field(cfg, "vocab_size")
    too_big = [i for i in [*ids, *tok.all_special_ids] if i is not None and i >= vocab]
    if not ids or too_big:
        raise _Fail(MSG_TOKENIZER, f"probe ids {ids[:20]} / special ids {tok.all_special_ids} "
                                   f"must be non-empty and below vocab_size {vocab}")


def _auto_class(t: Template):
    import transformers

    if t.kind == "image-understanding":
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def _check_weights(folder: Path, t: Template, *, materialize_limit: int) -> None:
    files = _weight_files(folder)
    if not files:
        raise _Fail(MSG_WEIGHTS, "no *.safetensors / *.bin weights files")
    total = sum(p.stat().st_size for p in files)
    try:
        # Quantized formats need their kernels (autoawq, NPU ops) to load; check their names only.
        if total > materialize_limit or t.quantization is not None:
            _verify_headers(folder, files, t)
        else:
            _load_weights(folder, t)
    except (_Fail, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - any loader error is a weights error
        raise _Fail(MSG_WEIGHTS, f"{type(e).__name__}: {e}") from e


def _load_weights(folder: Path, t: Template) -> None:
    import torch

    from services.lib.mlkit import MODEL_LOADING

    with MODEL_LOADING:
        model, info = _auto_class(t).from_pretrained(
            folder, trust_remote_code=False, local_files_only=True, low_cpu_mem_usage=True,
            dtype="auto", output_loading_info=True)
    problems = [f"{k}: {sorted(v)[:10]}" for k, v in info.items()
                if k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs") and v]
    # Random init of missing tensors only warns in transformers; for us it is a broken upload.
    if problems:
        raise _Fail(MSG_WEIGHTS, "; ".join(problems))
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise _Fail(MSG_WEIGHTS, f"non-finite values in {bad[:10]}")


def _file_shapes(folder: Path, files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the files, reading headers only (mmap for .bin)."""
    import torch
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        if path.suffix == ".safetensors":
            # safe_open validates the header against the file size (catches truncation).
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    shapes[name] = tuple(f.get_slice(name).get_shape())
        else:
            sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            shapes.update({k: tuple(v.shape) for k, v in sd.items()})
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            wanted = set(_read_json(index).get("weight_map", {}))
            if wanted - shapes.keys():
                raise _Fail(MSG_WEIGHTS, f"{index_name} lists tensors missing from the shards: "
                                         f"{sorted(wanted - shapes.keys())[:10]}")
    return shapes


def _verify_headers(folder: Path, files: list[Path], t: Template) -> None:
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    with torch.device("meta"):   # shapes only, no memory
        model = _auto_class(t).from_config(config, trust_remote_code=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Tied parameters (lm_head = embed_tokens) are stored once, under either name.
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    ignore_missing = [re.compile(p) for p in (model._keys_to_ignore_on_load_missing or [])]
    ignore_unexpected = [re.compile(p) for p in (model._keys_to_ignore_on_load_unexpected or [])]

    got = _file_shapes(folder, files)
    # Checkpoints saved from the base model lack the "model." prefix; transformers accepts them.
    prefix = model.base_model_prefix + "."
    if prefix != "." and not any(k.startswith(prefix) for k in got):
        got = {prefix + k: v for k, v in got.items()}
    if t.quantization is not None:
        # Packed linear weights: X.qweight (or X.weight with a different dtype) stands for X.weight.
        got = {(k.removesuffix(".qweight") + ".weight" if k.endswith(".qweight") else k): v
               for k, v in got.items()}

    problems = []
    present = set(got)
    for group in aliases.values():
        if len(group) > 1 and present & set(group):
            present |= set(group)
    missing = [k for k in expected if k not in present
               and not any(p.search(k) for p in ignore_missing)]
    unexpected = [k for k in got if k not in expected
                  and not any(p.search(k) for p in ignore_unexpected)
                  and not (t.quantization is not None and k.rsplit(".", 1)[-1] in _QUANT_SUFFIXES)]
    quant_linear = t.quantization is not None
    mismatched = [f"{k}: {got[k]} vs {expected[k]}" for k in got
                  if k in expected and got[k] != expected[k]
                  and not (quant_linear and len(expected[k]) == 2 and "layers." in k)]
    if missing:
        problems.append(f"missing tensors {missing[:10]} ({len(missing)} in all)")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:10]} ({len(unexpected)} in all)")
    if mismatched:
        problems.append(f"shape mismatches {mismatched[:10]}")
    if problems:
        raise _Fail(MSG_WEIGHTS, "; ".join(problems))


# --- entry point ------------------------------------------------------------------------------

def validate_weights(folder: Path, template: Template, *,
                     materialize_limit_bytes: int = MATERIALIZE_LIMIT_BYTES) -> WeightCheckResult:
    """Run the table 5-4 checks on an HF folder against a template; never raises."""
    folder = Path(folder)
    checks: list[tuple[str, bool]] = []
    state: dict[str, Any] = {}

    steps = [
        ("template", lambda: state.update(t=_check_template(template))),
        ("config", lambda: state.update(cfg=_check_config(folder))),
        ("quantization", lambda: _check_quantization(state["cfg"], state["t"])),
        ("structure", lambda: _check_structure(state["cfg"], state["t"])),
        ("generation_config", lambda: state.update(gen=_read_generation_config(folder))),
        ("do_sample", lambda: _check_do_sample(state["gen"])),
        ("tokenizer", lambda: _check_tokenizer(folder, state["cfg"])),
        ("weights", lambda: _check_weights(folder, state["t"],
                                           materialize_limit=materialize_limit_bytes)),
    ]
    for name, step in steps:
        try:
            step()
        except _Fail as f:
            checks.append((name, False))
            return WeightCheckResult(ok=False, message=f.message, detail=f.detail, checks=checks)
        except Exception as e:  # noqa: BLE001 - table 5-4: anything else is "unknown error"
            checks.append((name, False))
            tb = "".join(traceback.format_exception(e, limit=-5))
            return WeightCheckResult(ok=False, message=MSG_UNKNOWN,
                                     detail=f"{name}: {type(e).__name__}: {e}\n{tb}", checks=checks)
        checks.append((name, True))
    return WeightCheckResult(ok=True, checks=checks)
