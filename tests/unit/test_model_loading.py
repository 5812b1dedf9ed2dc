"""Model loads from several threads of one process (weight checks, LoRA merges, training set-up)."""
from __future__ import annotations

import threading

from services.lib.mlkit.tiny import build_tiny_model
from services.lib.mlkit.training.config import TrainConfig
from services.lib.mlkit.training.modeling import load_model


def test_concurrent_loads_in_threads_all_get_real_weights(tmp_path):
    folder = build_tiny_model(tmp_path / "tiny")
    failures: list[str] = []
    loaded: list[int] = []

    def load_repeatedly(tune_type: str) -> None:
        for _ in range(4):
            try:
                model = load_model(folder, TrainConfig(tune_type=tune_type), resume_from=None, device="cpu")
                assert not any(p.is_meta for p in model.parameters())
                loaded.append(1)
            except Exception as exc:  # collected: an exception in a thread would not fail the test
                failures.append(repr(exc)[:200])

    threads = [threading.Thread(target=load_repeatedly, args=(kind,)) for kind in ("full", "lora", "lora")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and len(loaded) == 12
