"""Checkpoint folders: HF weights (or the LoRA adapter) + everything needed to continue exactly.

Layout of ``checkpoint-<iteration>/``:
    model.safetensors, config.json, ... | adapter_model.safetensors, adapter_config.json
    tokenizer files                      (so a full-weight checkpoint is a usable HF model folder)
    optimizer.pt, scheduler.pt           (AdamW moments and step counts, LR schedule position)
    rng_state_<rank>.pt                  (each rank's torch generator: dropout continues identically)
    trainer_state.json                   (iteration, data position and sample order, run settings)
A checkpoint is written to a temporary sibling folder and renamed when complete, so a folder
named ``checkpoint-N`` is never half-written.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

STATE_FILE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
TRAINING_ONLY = ("optimizer.pt", "scheduler.pt", STATE_FILE)


@dataclass
class TrainerState:
    iteration: int                    # iterations completed
    total_iterations: int
    epoch: int                        # 0-based epoch of the next iteration
    step_in_epoch: int                # iterations of that epoch already done
    order: list[int]                  # that epoch's sample order
    tune_type: str
    num_samples: int
    global_batch_size: int
    epochs: int
    seed: int
    data_fingerprint: str
    world_size: int
    last_loss: float | None = None
    settings: dict = field(default_factory=dict)


def folder_name(iteration: int) -> str:
    return f"checkpoint-{iteration}"


def rng_state(device: str) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, device: str) -> None:
    torch.set_rng_state(state["cpu"])
    if device.startswith("cuda") and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def save(folder: Path, *, model, tokenizer, optimizer, scheduler, state: TrainerState,
         rng_states: list[dict]) -> Path:
    """Write the checkpoint atomically (temp folder + rename); returns the final folder."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp, save_jinja_files=False)   # template stays in tokenizer_config.json
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    for rank, rng in enumerate(rng_states):
        torch.save(rng, tmp / f"rng_state_{rank}.pt")
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")
    _fsync_dir(tmp)
    if folder.exists():       # same iteration saved again (e.g. a resumed run stopping at once)
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def load_state(folder: Path) -> TrainerState:
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"resume_from: {folder} is not a checkpoint folder (no {STATE_FILE})")
    return TrainerState(**json.loads(path.read_text(encoding="utf-8")))


def load_tensors(path: Path):
    """A saved state dict: tensors and plain containers only, never arbitrary pickled objects.

    Resume state is kept where only the platform writes (the tuning worker's managed bucket), and is
    still read with the restricted unpickler, so a swapped file can fail a resume but never run code.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # UnpicklingError and friends: say which file, not how to bypass
        raise ValueError(f"resume_from: {Path(path).name} is not a valid training state file") from exc


def load_rng(folder: Path, rank: int) -> dict | None:
    path = Path(folder) / f"rng_state_{rank}.pt"
    return load_tensors(path) if path.is_file() else None


def export_final(checkpoint: Path, out: Path) -> Path:
    """An HF folder without the training-only files; weights hard-linked when possible (no 2nd copy)."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for src in checkpoint.iterdir():
        if src.name in TRAINING_ONLY or src.name.startswith("rng_state_") or not src.is_file():
            continue
        try:
            os.link(src, tmp / src.name)
        except OSError:
            shutil.copy2(src, tmp / src.name)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _fsync_dir(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
