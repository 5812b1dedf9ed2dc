"""Issue 17 item 4: lm-evaluation-harness's ``local-completions`` model scores a loglikelihood task
(multiple choice) against a deployed (tiny) service through the gateway's /v1/completions. The task and
its data are local files (no hub); every per-choice loglikelihood the harness computed equals the one
/v1/completions echo + logprobs gives for the same tokens."""
from __future__ import annotations

import asyncio
import json
import math

import pytest

from tests.integration.test_openai_api import key, service, unified  # noqa: F401
from tests.integration.test_serving_api import serving_tmp, tiny_model_folder  # noqa: F401

pytestmark = pytest.mark.integration

TASK = "maas_tiny_choice"
DOCS = [
    {"question": "What colour is the sky on a clear day?", "choices": ["blue", "green", "red"], "answer": 0},
    {"question": "How many legs does a cat have?", "choices": ["two", "four", "six"], "answer": 1},
    {"question": "Which one is a fruit?", "choices": ["carrot", "potato", "apple"], "answer": 2},
    {"question": "What do bees make?", "choices": ["honey", "milk"], "answer": 0},
]
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The harness's split of (context, continuation) into tokens (lm_eval.api.model.LM._encode_pair for a
    causal model, no BOS): trailing spaces go to the continuation, the whole is encoded, then split."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    head = tokenizer(context, add_special_tokens=False).input_ids
    return head, whole[len(head):]


async def test_local_completions_scores_a_local_multiple_choice_task(running_platform, unified, service, key,
                                                                       serving_tmp, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data, cache=tmp_path / "hf-datasets"))
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):   # a hub download would fail, not pass silently
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("OPENAI_API_KEY", key)                 # how local-completions sends its key
    model_dir = tiny_model_folder(serving_tmp)                # the service's model: the harness's tokenizer
    model_args = (f"base_url={running_platform['url']}/v1/completions,model={service['name']},"
                  f"tokenizer_backend=huggingface,tokenizer={model_dir},max_retries=1,num_concurrent=1")

    # The harness posts {"prompt": [token ids], "max_tokens": 1, "echo": true, "logprobs": 1, "temperature": 0,
    # "seed": 1234} with blocking `requests` (off the event loop that runs the platform) and sums the echoed
    # token_logprobs after the context, less the generated last one.
    results = await asyncio.to_thread(
        lm_eval.simple_evaluate, model="local-completions", model_args=model_args, tasks=[TASK],
        task_manager=TaskManager(include_path=str(tasks)), log_samples=True, batch_size=1)

    accuracy = results["results"][TASK]["acc,none"]
    assert 0 <= accuracy <= 1 and accuracy * len(DOCS) == pytest.approx(round(accuracy * len(DOCS)))
    samples = results["samples"][TASK]
    assert len(samples) == len(DOCS)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for sample in samples:
        doc = sample["doc"]
        scored = [resp[0][0] for resp in sample["resps"]]      # (loglikelihood, is_greedy) per choice
        assert len(scored) == len(doc["choices"]) and all(math.isfinite(s) and s < 0 for s in scored)
        assert sample["acc"] == float(max(range(len(scored)), key=scored.__getitem__) == doc["answer"])
        for (context, continuation), harness in zip(sample["arguments"], scored, strict=True):
            head, tail = _encode_pair(tokenizer, context, continuation)
            echoed = await unified.completions.create(model=service["name"], prompt=head + tail, max_tokens=0,
                                                      echo=True, logprobs=1)
            numbers = echoed.choices[0].logprobs.token_logprobs
            assert len(numbers) == len(head) + len(tail)
            assert harness == pytest.approx(sum(numbers[len(head):]), abs=1e-4)
