"""train() and merge_lora(): what the tuning service calls."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from services.lib.mlkit.training import checkpoint as ckpt
from services.lib.mlkit.training.config import TrainConfig, TrainResult, checkpoint_iterations, total_iterations
from services.lib.mlkit.training.data import encode_examples, fingerprint
from services.lib.mlkit.training.loop import Comm, Hooks, RunInputs, resolve_device, run


def _noop_log(record: dict) -> None:
    pass


def _noop_checkpoint(iteration: int, folder: Path) -> None:
    pass


def _never() -> bool:
    return False


def train(*, model_dir: Path, examples: list[dict], config: TrainConfig, output_dir: Path,
          resume_from: Path | None = None, on_log: Callable[[dict], None] = _noop_log,
          on_checkpoint: Callable[[int, Path], None] = _noop_checkpoint,
          should_stop: Callable[[], bool] = _never, ray_placement=None) -> TrainResult:
    """Fine-tune (full / LoRA) or continue pretraining the HF model in ``model_dir``.

    ``ray_placement`` (a ``ray_ranks.RayPlacement``): run the ``world_size`` ranks on distinct nodes
    of a Ray cluster's pool instead of as processes of this machine.

    Checkpoints go to ``output_dir/checkpoint-<iteration>/`` and the finished model to
    ``output_dir/final/``. Everything that can be wrong with the inputs (config, examples, a
    mismatching checkpoint) raises ValueError naming the field before anything is written.
    """
    from transformers import AutoTokenizer

    model_dir, output_dir = Path(model_dir), Path(output_dir)
    resume_from = Path(resume_from) if resume_from is not None else None
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"model_dir: {model_dir} is not a Hugging Face model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = encode_examples(examples, tokenizer, tune_type=config.tune_type, max_seq_len=config.max_seq_len)
    digest = fingerprint(examples)
    total = total_iterations(len(encoded), config)
    checkpoint_iterations(total, config.checkpoint_count)          # validates checkpoint_count
    if resume_from is not None:
        _check_resume(resume_from, config, len(encoded), digest)
    output_dir.mkdir(parents=True, exist_ok=True)

    inputs = RunInputs(model_dir=model_dir, encoded=encoded, config=config, output_dir=output_dir,
                       resume_from=resume_from, fingerprint=digest, device=resolve_device(config))
    hooks = Hooks(on_log=on_log, on_checkpoint=on_checkpoint, should_stop=should_stop)
    if config.world_size == 1 and not config.isolate:
        return _run_here(inputs, hooks)
    cores = config.num_threads or torch.get_num_threads()
    if ray_placement is not None:
        # Imported only here: ray (like the rank machinery below) is needed by multi-node runs only.
        from services.lib.mlkit.training.ray_ranks import run_on_ray

        return run_on_ray(inputs, hooks, world_size=config.world_size, placement=ray_placement,
                          threads_per_rank=config.num_threads or max(1, int(ray_placement.cpus_per_rank)),
                          timeout_s=config.dist_timeout_s)
    from services.lib.mlkit.training.distributed import run_distributed

    return run_distributed(inputs, hooks, world_size=config.world_size,
                           threads_per_rank=max(1, cores // config.world_size), timeout_s=config.dist_timeout_s)


def _run_here(inputs: RunInputs, hooks: Hooks) -> TrainResult:
    """world_size 1: in the calling process; its RNG and thread count are restored afterwards."""
    threads = torch.get_num_threads()
    devices = [torch.cuda.current_device()] if inputs.device.startswith("cuda") else []
    try:
        if inputs.config.num_threads:
            torch.set_num_threads(inputs.config.num_threads)
        with torch.random.fork_rng(devices=devices):
            return run(inputs, comm=Comm(), hooks=hooks)
    finally:
        torch.set_num_threads(threads)


def _check_resume(folder: Path, config: TrainConfig, num_samples: int, digest: str) -> None:
    state = ckpt.load_state(folder)
    expected = {"tune_type": config.tune_type, "num_samples": num_samples,
                "global_batch_size": config.global_batch_size, "epochs": config.epochs, "seed": config.seed}
    for name, value in expected.items():
        if getattr(state, name) != value:
            raise ValueError(f"resume_from: the checkpoint was made with {name}={getattr(state, name)!r}, "
                             f"this run has {value!r}; a resume must use the same settings")
    if state.data_fingerprint != digest:
        raise ValueError("resume_from: the checkpoint was made on different examples; a resume must use the same data")


def merge_lora(*, base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Fold a LoRA adapter into its base weights and save a plain HF folder (weights + tokenizer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"adapter_dir: {adapter_dir} holds no LoRA adapter (no adapter_config.json)")
    from services.lib.mlkit import MODEL_LOADING

    with MODEL_LOADING:
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(tmp, save_jinja_files=False)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir
