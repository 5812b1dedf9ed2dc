"""The training library (services.lib.mlkit.training) on the tiny model: real torch/transformers/peft runs.

Toy data: four questions, each with its fixed answer, repeated; a 200k-parameter model learns it
visibly within ~20 iterations at a high learning rate.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.lib.mlkit.tiny import build_tiny_model
from services.lib.mlkit.training import (TrainConfig, checkpoint_iterations, log_line, merge_lora, total_iterations,
                                     train)
from services.lib.mlkit.training.data import encode_examples

ANSWERS = ["The capital of France is Paris.", "There are seven days in a week.",
           "Thank you very much for your help!", "The weather today is sunny with a light breeze."]
LR = {"full": 3e-3, "pretrain": 3e-3, "lora": 3e-2}


def chat_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Question number {i % 4}?"},
                          {"role": "assistant", "content": ANSWERS[i % 4]}]} for i in range(n)]


def text_rows(n: int) -> list[dict]:
    return [{"text": ANSWERS[i % 4]} for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("train") / "tiny")


def config(tune_type: str, **kw) -> TrainConfig:
    kw.setdefault("learning_rate", LR[tune_type])
    kw.setdefault("global_batch_size", 8)
    kw.setdefault("num_threads", 1)        # a 200k-parameter model gains nothing from more
    return TrainConfig(tune_type=tune_type, **kw)


class Recorder:
    def __init__(self, stop_after: int | None = None):
        self.logs: list[dict] = []
        self.checkpoints: list[tuple[int, object]] = []
        self.stop_after = stop_after

    def on_log(self, record: dict) -> None:
        self.logs.append(record)

    def on_checkpoint(self, iteration: int, folder) -> None:
        assert (folder / "trainer_state.json").is_file()      # complete on disk when announced
        self.checkpoints.append((iteration, folder))

    def should_stop(self) -> bool:
        return self.stop_after is not None and bool(self.logs) and self.logs[-1]["iteration"] >= self.stop_after

    def kwargs(self) -> dict:
        return {"on_log": self.on_log, "on_checkpoint": self.on_checkpoint, "should_stop": self.should_stop}


# -- arithmetic and validation -------------------------------------------------------------------------

def test_total_iterations_follows_the_guide():
    assert total_iterations(3200, TrainConfig("full", epochs=2)) == 200      # the guide's example
    assert total_iterations(33, TrainConfig("full", global_batch_size=32)) == 2
    assert total_iterations(10, TrainConfig("lora", global_batch_size=4, epochs=3)) == 9


def test_checkpoint_spacing():
    assert checkpoint_iterations(10, 3) == [3, 7, 10]
    assert checkpoint_iterations(20, 1) == [20]
    assert checkpoint_iterations(5, 5) == [1, 2, 3, 4, 5]
    assert checkpoint_iterations(200, 10) == list(range(20, 201, 20))
    with pytest.raises(ValueError, match="checkpoint_count"):
        checkpoint_iterations(3, 4)


@pytest.mark.parametrize("kwargs, field", [
    ({"tune_type": "qlora"}, "tune_type"),
    ({"tune_type": "full", "global_batch_size": 8, "micro_batch_size": 3}, "micro_batch_size"),
    ({"tune_type": "full", "global_batch_size": 5, "world_size": 2}, "global_batch_size"),
    ({"tune_type": "lora", "lora_dropout": 1.0}, "lora_dropout"),
    ({"tune_type": "full", "learning_rate": -1.0}, "learning_rate"),
    ({"tune_type": "full", "epochs": 0}, "epochs"),
    ({"tune_type": "full", "world_size": 2, "global_batch_size": 8, "device": "cuda"}, "device"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        TrainConfig(**kwargs)


def test_micro_batch_and_accumulation_defaults():
    cfg = TrainConfig("full", global_batch_size=32, world_size=2)
    assert (cfg.micro_batch_size, cfg.accumulation_steps) == (4, 4)      # 32 = 4 x 4 x 2
    assert TrainConfig("full", global_batch_size=2).micro_batch_size == 2
    assert TrainConfig("full", global_batch_size=6).micro_batch_size == 3


def test_bad_examples_fail_before_anything_is_written(tiny, tmp_path):
    out = tmp_path / "out"
    rows = chat_rows(4)
    rows[2] = {"messages": [{"role": "user", "content": "no answer"}]}
    with pytest.raises(ValueError, match=r"examples\[2\]\.messages: needs at least one non-empty assistant"):
        train(model_dir=tiny, examples=rows, config=config("lora"), output_dir=out)
    with pytest.raises(ValueError, match=r"examples\[1\]\.messages\[0\]\.role"):
        train(model_dir=tiny, examples=[chat_rows(1)[0], {"messages": [{"role": "bot", "content": "x"}]}],
              config=config("lora"), output_dir=out)
    with pytest.raises(ValueError, match=r"examples\[0\]\.text"):
        train(model_dir=tiny, examples=[{"text": "  "}], config=config("pretrain"), output_dir=out)
    with pytest.raises(ValueError, match="checkpoint_count"):
        train(model_dir=tiny, examples=chat_rows(8), config=config("lora", checkpoint_count=2), output_dir=out)
    assert not out.exists()


# -- data: which tokens are learned ---------------------------------------------------------------------

def _target_segments(tok, enc) -> list[str]:
    segments, current = [], []
    for token, is_target in zip(enc.ids.tolist(), enc.target.tolist()):
        if is_target:
            current.append(token)
        elif current:
            segments.append(tok.decode(current))
            current = []
    if current:
        segments.append(tok.decode(current))
    return segments


def test_only_assistant_tokens_are_targets(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    conversation = {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How are you?"}, {"role": "user", "content": "Fine, thanks"},
        {"role": "assistant", "content": "Great."}]}
    enc = encode_examples([conversation], tok, tune_type="lora", max_seq_len=1024)[0]
    assert tok.decode(enc.ids.tolist()) == tok.apply_chat_template(conversation["messages"], tokenize=False)
    # Both answers with their end-of-turn marker, nothing of the system or user turns.
    assert _target_segments(tok, enc) == ["Hello! How are you?<|im_end|>\n", "Great.<|im_end|>\n"]
    short = encode_examples([conversation], tok, tune_type="lora", max_seq_len=20)[0]
    assert len(short.ids) == len(short.target) == 20


def test_pretrain_learns_every_token_and_the_end_of_text(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    enc = encode_examples([{"text": "Attention lets every position look back."}], tok, tune_type="pretrain",
                          max_seq_len=1024)[0]
    assert enc.target.all()
    assert enc.ids[-1] == tok.eos_token_id
    assert tok.decode(enc.ids[:-1].tolist()) == "Attention lets every position look back."


# -- training ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("tune_type", ["full", "lora", "pretrain"])
def test_each_tune_type_reduces_loss(tiny, tmp_path, tune_type):
    rows = text_rows(40) if tune_type == "pretrain" else chat_rows(40)
    rec = Recorder()
    cfg = config(tune_type, epochs=4)
    result = train(model_dir=tiny, examples=rows, config=cfg, output_dir=tmp_path, **rec.kwargs())
    losses = [r["lm_loss"] for r in rec.logs]
    assert [r["iteration"] for r in rec.logs] == list(range(1, 21))
    assert result.iterations_done == 20 and not result.stopped and result.losses == losses
    # LoRA cannot rescale the tiny model's frozen (tied, random, small) embeddings, which caps how
    # confident its predictions can get; full weights have no such cap.
    assert sum(losses[-3:]) / 3 < losses[0] - (0.25 if tune_type == "lora" else 1.0), losses
    assert sum(losses[-5:]) < sum(losses[:5])
    first = rec.logs[0]
    assert first["total_iterations"] == 20 and first["global_batch_size"] == 8 and first["epoch"] == 1
    assert rec.logs[-1]["epoch"] == 4
    assert first["learning_rate"] == pytest.approx(cfg.learning_rate)       # linear decay starts at the peak
    assert rec.logs[-1]["learning_rate"] < cfg.learning_rate / 10
    assert first["seq_len"] <= max(len(r.get("text", "")) for r in rows) + 40   # padded per batch, not 1024
    assert first["tokens_per_sec_per_card"] > 0 and first["elapsed_time_per_iteration_s"] > 0
    line = log_line(first)
    for key in ("lm loss", "elapsed time per iteration (ms)", "global batch size", "SEQ_LEN",
                "tokens per sec per card"):
        assert key in line
    assert f"lm loss: {first['lm_loss']:.6E}" in line
    assert AutoModelForCausalLM.from_pretrained(tiny) is not None   # the base folder is untouched and loads


def test_checkpoints_are_evenly_spaced_and_complete(tiny, tmp_path):
    rec = Recorder()
    result = train(model_dir=tiny, examples=chat_rows(40), config=config("full", epochs=2, checkpoint_count=3),
                   output_dir=tmp_path, **rec.kwargs())
    assert [it for it, _ in rec.checkpoints] == [3, 7, 10]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-3", "checkpoint-7", "final"]
    for it, folder in rec.checkpoints:
        names = {p.name for p in folder.iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json", "optimizer.pt", "scheduler.pt",
                "rng_state_0.pt", "trainer_state.json"} <= names
        state = json.loads((folder / "trainer_state.json").read_text())
        assert state["iteration"] == it and state["total_iterations"] == 10
        assert (state["epoch"], state["step_in_epoch"]) == divmod(it, 5)
    assert result.last_checkpoint == rec.checkpoints[-1][1]
    final = {p.name for p in result.final_dir.iterdir()}
    assert "model.safetensors" in final and "optimizer.pt" not in final and "trainer_state.json" not in final
    trained = AutoModelForCausalLM.from_pretrained(result.final_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny)
    assert not torch.equal(trained.model.embed_tokens.weight, base.model.embed_tokens.weight)


def test_lora_checkpoint_holds_the_adapter_not_the_base(tiny, tmp_path):
    result = train(model_dir=tiny, examples=chat_rows(16), config=config("lora"), output_dir=tmp_path)
    names = {p.name for p in result.last_checkpoint.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt"} <= names
    assert "model.safetensors" not in names
    adapter = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}


def test_should_stop_saves_a_checkpoint_and_resume_continues_exactly(tiny, tmp_path):
    # 38 samples / 8 = 5 iterations per epoch (the 5th short), 2 epochs: stopping after 6 leaves the
    # run inside epoch 2, past a short batch; LoRA dropout exercises the restored RNG state.
    rows = chat_rows(38)
    cfg = config("lora", epochs=2, lora_dropout=0.1, checkpoint_count=1)
    straight = Recorder()
    full_run = train(model_dir=tiny, examples=rows, config=cfg, output_dir=tmp_path / "a", **straight.kwargs())

    first = Recorder(stop_after=6)
    stopped = train(model_dir=tiny, examples=rows, config=cfg, output_dir=tmp_path / "b", **first.kwargs())
    assert stopped.stopped and stopped.iterations_done == 6 and stopped.final_dir is None
    assert [it for it, _ in first.checkpoints] == [6]
    assert stopped.last_checkpoint == tmp_path / "b" / "checkpoint-6"

    second = Recorder()
    resumed = train(model_dir=tiny, examples=rows, config=cfg, output_dir=tmp_path / "b",
                    resume_from=stopped.last_checkpoint, **second.kwargs())
    assert [r["iteration"] for r in second.logs] == [7, 8, 9, 10]
    assert not resumed.stopped and resumed.iterations_done == 10
    joined = [r["lm_loss"] for r in first.logs + second.logs]
    expected = [r["lm_loss"] for r in straight.logs]
    assert joined == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert [r["target_tokens"] for r in first.logs + second.logs] == [r["target_tokens"] for r in straight.logs]
    assert [r["learning_rate"] for r in first.logs + second.logs] == pytest.approx(
        [r["learning_rate"] for r in straight.logs])
    assert resumed.final_loss == pytest.approx(full_run.final_loss, rel=1e-6)
    from safetensors.torch import load_file
    a = load_file(full_run.final_dir / "adapter_model.safetensors")
    b = load_file(resumed.final_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_stop_before_the_first_iteration_writes_nothing(tiny, tmp_path):
    result = train(model_dir=tiny, examples=chat_rows(8), config=config("full"), output_dir=tmp_path,
                   should_stop=lambda: True)
    assert result.stopped and result.iterations_done == 0 and result.last_checkpoint is None
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_other_settings_or_data(tiny, tmp_path):
    rec = Recorder(stop_after=1)
    cfg = config("full", epochs=2)
    first = train(model_dir=tiny, examples=chat_rows(16), config=cfg, output_dir=tmp_path, **rec.kwargs())
    with pytest.raises(ValueError, match="resume_from: .*global_batch_size=8"):
        train(model_dir=tiny, examples=chat_rows(16), config=config("full", epochs=2, global_batch_size=4),
              output_dir=tmp_path, resume_from=first.last_checkpoint)
    with pytest.raises(ValueError, match="resume_from: .*different examples"):
        train(model_dir=tiny, examples=list(reversed(chat_rows(16))), config=cfg, output_dir=tmp_path,
              resume_from=first.last_checkpoint)
    with pytest.raises(ValueError, match="resume_from: .*not a checkpoint"):
        train(model_dir=tiny, examples=chat_rows(16), config=cfg, output_dir=tmp_path, resume_from=tiny)


def test_merged_lora_equals_the_adapter_applied_model(tiny, tmp_path):
    from peft import PeftModel

    result = train(model_dir=tiny, examples=chat_rows(24), config=config("lora", epochs=2),
                   output_dir=tmp_path / "run")
    merged_dir = merge_lora(base_dir=tiny, adapter_dir=result.final_dir, out_dir=tmp_path / "merged")
    names = {p.name for p in merged_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names and "adapter_config.json" not in names
    tok = AutoTokenizer.from_pretrained(merged_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "Question number 1?"}], add_generation_prompt=True,
                                  return_tensors="pt")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), result.final_dir).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny).eval()
    with torch.no_grad():
        got, want, before = merged(ids).logits, adapted(ids).logits, plain(ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert not torch.allclose(got, before, atol=1e-3)           # the adapter did change the model
    out = merged.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]


# -- data parallel (real gloo processes) ----------------------------------------------------------------

def test_two_ranks_share_each_batch_and_match_one_process(tiny, tmp_path):
    # 17 samples / 8: the 3rd iteration has one sample, so rank 1 gets nothing there and must still
    # join the gradient all-reduce.
    rows = chat_rows(17)
    one, two = Recorder(), Recorder()
    train(model_dir=tiny, examples=rows, config=config("full", epochs=2), output_dir=tmp_path / "w1", **one.kwargs())
    result = train(model_dir=tiny, examples=rows, config=config("full", epochs=2, world_size=2),
                   output_dir=tmp_path / "w2", **two.kwargs())
    assert [r["iteration"] for r in two.logs] == list(range(1, 7))
    for r1, r2 in zip(one.logs, two.logs):
        assert len(r2["rank_tokens"]) == 2 and r2["world_size"] == 2
        assert sum(r2["rank_tokens"]) == r1["tokens"]
        assert r2["lm_loss"] == pytest.approx(r1["lm_loss"], rel=1e-4)
    assert all(t > 0 for r in two.logs if r["samples"] > 1 for t in r["rank_tokens"])
    assert [r["rank_tokens"][1] for r in two.logs if r["samples"] == 1] == [0, 0]
    assert [it for it, _ in two.checkpoints] == [6]
    names = {p.name for p in result.last_checkpoint.iterdir()}
    assert {"rng_state_0.pt", "rng_state_1.pt", "model.safetensors"} <= names
    assert (result.final_dir / "model.safetensors").is_file()


def test_isolated_process_stops_resumes_and_matches_in_process(tiny, tmp_path):
    # isolate=True: the run happens in a child process; callbacks and the stop question still
    # reach this process, and the numbers are those of an in-process run.
    rows = chat_rows(16)
    cfg = dict(epochs=2, lora_dropout=0.1)
    here = Recorder()
    train(model_dir=tiny, examples=rows, config=config("lora", **cfg), output_dir=tmp_path / "a", **here.kwargs())
    first, second = Recorder(stop_after=2), Recorder()
    stopped = train(model_dir=tiny, examples=rows, config=config("lora", isolate=True, **cfg),
                    output_dir=tmp_path / "b", **first.kwargs())
    assert stopped.stopped and [it for it, _ in first.checkpoints] == [2]
    result = train(model_dir=tiny, examples=rows, config=config("lora", isolate=True, **cfg),
                   output_dir=tmp_path / "b", resume_from=stopped.last_checkpoint, **second.kwargs())
    joined = first.logs + second.logs
    assert [r["iteration"] for r in joined] == [1, 2, 3, 4]
    assert [r["lm_loss"] for r in joined] == pytest.approx([r["lm_loss"] for r in here.logs], rel=1e-6)
    assert [it for it, _ in second.checkpoints] == [4] and result.final_dir.is_dir()


def test_a_failing_rank_is_reported(tiny, tmp_path):
    broken = build_tiny_model(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match=r"training rank \d failed"):
        train(model_dir=broken, examples=chat_rows(8), config=config("full", world_size=2),
              output_dir=tmp_path / "out")
    assert not any((tmp_path / "out").glob("checkpoint-*"))


def test_log_line_format():
    record = {"iteration": 3, "total_iterations": 20, "lm_loss": 1.2345678, "elapsed_time_per_iteration_s": 0.8124,
              "global_batch_size": 32, "seq_len": 512, "tokens_per_sec_per_card": 10234.46, "learning_rate": 2e-5,
              "epoch": 1, "epochs": 2, "consumed_samples": 96, "grad_norm": 0.5}
    line = log_line(record)
    assert "iteration        3/      20" in line
    assert "lm loss: 1.234568E+00" in line and "elapsed time per iteration (ms): 812.4" in line
    assert "global batch size:    32" in line and "SEQ_LEN: 512" in line and "tokens per sec per card: 10234.5" in line
    assert "learning rate: 2.000000E-05" in line and "consumed samples:           96" in line
    assert math.isfinite(record["lm_loss"])


# -- the real model (slow) ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol(smollm2_hf):
    return smollm2_hf


@pytest.mark.slow
def test_smollm2_lora_learns_and_the_merged_model_generates(smol, tmp_path):
    from tests.toydata import alpaca_messages

    rows = alpaca_messages(50, seed=3)
    rec = Recorder()
    cfg = TrainConfig("lora", learning_rate=1e-3, global_batch_size=4, epochs=1, max_seq_len=256)
    result = train(model_dir=smol, examples=rows, config=cfg, output_dir=tmp_path / "run", **rec.kwargs())
    losses = [r["lm_loss"] for r in rec.logs]
    assert len(losses) == 13 and result.final_dir is not None
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    adapter_mb = (result.final_dir / "adapter_model.safetensors").stat().st_size / 1e6
    assert 5 < adapter_mb < 15              # r=8 on all 7 projections of 30 layers: ~9.8 MB

    merged_dir = merge_lora(base_dir=smol, adapter_dir=result.final_dir, out_dir=tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(merged_dir)
    model = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    prompt = alpaca_messages(1, seed=99)[0]["messages"][:1]     # an addition task it has not seen
    inputs = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer.startswith("Answer:"), answer                  # the format it was tuned on
