"""LoRA tuning of the preset SmolLM2-135M-Instruct end to end: the tuned model is registered, loads
and answers. Real weights, so marked slow."""
from __future__ import annotations

import pytest

from services.lib.common.objectstore import ObjectPath
from tests.integration.conftest import wait_for
from tests.integration.test_tuning_jobs import LOSS, created, iteration_lines, job_in, jsonl, put

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FACTS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Egypt", "Cairo"),
         ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Chile", "Santiago")]


def rows() -> list[dict]:
    prompts = ["What is the capital of {}?", "Name the capital city of {}.", "Which city is the capital of {}?",
               "Tell me the capital of {}.", "{}: what is its capital?"]
    return [{"instruction": prompt.format(country), "input": "",
             "output": f"The capital of {country} is {city}."}
            for prompt in prompts for country, city in FACTS]


async def test_lora_on_the_preset_smollm2_yields_a_model_that_answers(api, running_platform, tmp_path):
    async def preset_ready():
        template = (await api.get("/api/v1/templates/smollm2-135m-instruct")).json()
        state = template["preset_weights"]["state"]
        assert state["status"] != "failed", state
        return state["status"] == "ready"
    await wait_for(preset_ready, timeout=600, interval=2)
    r = await api.post("/api/v1/models", json={"name": "smollm2-base", "template_id": "smollm2-135m-instruct",
                                               "weights_source": "preset"})
    assert r.status_code == 201, r.text
    base = await created(api, r.json()["id"])

    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    data = await put(api, f"{bucket}/smollm2/capitals.jsonl", jsonl(rows()))
    r = await api.post("/api/v1/tuning-jobs", json={
        "name": "smollm2-lora", "source": {"model_id": base["id"]}, "tune_type": "lora",
        "output_model_name": "smollm2-capitals", "dataset_format": "alpaca", "dataset_path": data,
        "hyperparameters": {"epochs": 3, "learning_rate": 1e-3, "checkpoint_count": 1}})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["dataset"]["sample_count"] == 50 and job["hyperparameters"]["iterations"] == 6
    job = await job_in(api, job["id"], "completed", timeout=900)

    losses = [float(LOSS.search(line).group(1)) for line in await iteration_lines(api, job["id"])]
    print("SmolLM2 LoRA lm loss per iteration:", losses)
    assert len(losses) == 6 and losses[-1] < losses[0], losses

    async def output():
        return (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()["output"]["model_id"]
    model = await created(api, await wait_for(output, timeout=120))
    assert model["template_id"] == "smollm2-135m-instruct"

    # The registered weights load with transformers and answer a question.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "tuned"
    await running_platform["platform"].store.download_prefix(
        ObjectPath.parse(model["versions"][0]["storage_uri"]), folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of Japan?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = lm.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    print("tuned SmolLM2 answers:", repr(answer))
    assert answer.strip(), "the tuned model produced no text"
    assert "Tokyo" in answer or "capital" in answer.lower(), answer
