"""SmoothQuant-W8A8 and AWQ-W4A16 on the preset SmolLM2-135M-Instruct through the real API: each job
reports its perplexity and size ratios, registers a deploy-only model, and the inference engine
serves the quantized ONNX model: it still answers a chat prompt. Real weights, so marked slow.

The chat prompt is one the float model answers with a clear first token: "What is the capital of
France?" is a coin toss already in float32 (first answer token "The" 0.152 vs "L" 0.140, and "L" goes
on "L'Étoile, la Marseillaise, la femme..." in float32 too), so any 8-bit noise may flip it. How far a
compressed model drifts on chat prompts is what ``quantization.json`` reports under ``details.chat``
(chat-turn perplexity, first-answer-token KL to the float model), asserted below.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from services.lib.common.objectstore import ObjectPath
from tests.integration.conftest import wait_for
from tests.integration.test_compression_jobs import output_model, settled_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRESET = "smollm2-135m-instruct"
# Goals (benchmarks/bench_quantization.py measures the same recipes against the fp32 ONNX export).
GOALS = {"smoothquant-w8a8": (1.05, 0.30), "awq-w4a16": (1.15, 0.20)}


def _answer(folder, question: str) -> str:
    """What the inference engine (services/lib/inference, as serving runs it) answers from the folder."""
    from services.lib.inference.engine import Engine
    from services.lib.inference.params import SamplingParams

    engine = Engine(folder, max_model_len=256, max_num_seqs=1)
    try:
        ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                   add_generation_prompt=True)
        return engine.generate(ids, SamplingParams(temperature=0, max_tokens=24)).text
    finally:
        engine.close()


async def test_preset_smollm2_compresses_within_the_goals_and_still_answers(api, running_platform, tmp_path):
    async def preset_ready():
        state = (await api.get(f"/api/v1/templates/{PRESET}")).json()["preset_weights"]["state"]
        assert state["status"] != "failed", state
        return state["status"] == "ready"
    await wait_for(preset_ready, timeout=900, interval=2)

    jobs = {}
    for strategy in GOALS:
        tag = strategy.split("-")[0]
        r = await api.post("/api/v1/compression-jobs", json={
            "name": f"smollm2-{tag}", "source": {"template_id": PRESET}, "strategy": strategy,
            "output_model_name": f"smollm2-{tag}"})
        assert r.status_code == 201, r.text
        assert r.json()["source"]["kind"] == "template"
        jobs[strategy] = r.json()

    store = running_platform["platform"].store
    for strategy, (ppl_goal, size_goal) in GOALS.items():
        job = await settled_job(api, jobs[strategy]["id"], timeout=3600)
        assert job["status"] == "completed", job
        m = job["metrics"]
        print(f"\n{strategy}: perplexity {m['perplexity_before']:.3f} -> {m['perplexity_after']:.3f} "
              f"({m['perplexity_ratio']:.3f}x), size {m['size_before_bytes'] / 1e6:.1f} MB -> "
              f"{m['size_after_bytes'] / 1e6:.1f} MB ({m['size_ratio']:.3f}x), {m['duration_seconds']:.0f} s")
        assert m["perplexity_ratio"] <= ppl_goal and m["size_ratio"] <= size_goal, m

        model = await output_model(api, job)
        assert model["status"] == "created" and model["quantization"] == strategy
        version = (await api.get(f"/api/v1/models/{model['id']}/versions/1")).json()
        folder = tmp_path / strategy
        await store.download_prefix(ObjectPath.parse(version["storage_uri"]), folder)
        chat = json.loads((folder / "quantization.json").read_text())["details"]["chat"]
        print(f"{strategy} chat: {chat}")
        assert chat["prompts"] >= 8 and chat["perplexity_ratio"] <= ppl_goal, chat
        # In a thread: loading and running the model must not stop the platform's event loop.
        answer = await asyncio.to_thread(_answer, folder, "Who wrote Romeo and Juliet?")
        print(f"{strategy} answers: {answer!r}")
        assert "Shakespeare" in answer
