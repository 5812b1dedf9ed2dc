#!/usr/bin/env python
"""Prefix caching: time to first token of a conversation's second turn, with the cache and without.

    python benchmarks/bench_prefix_cache.py [--context 1000] [--rounds 5] [--cache DIR] [--tiny]

A conversation on SmolLM2-135M-Instruct (the preset; ``--tiny``: the tiny test model instead): a
system prompt and a first user message of about ``--context`` tokens, a greedy answer of 32 tokens,
then a short second question. The figure is the second turn's TTFT (prefill and first token, in
the engine, no HTTP) on an engine with the prefix cache against the same request on an engine
started with ``prefix_cache_bytes=0``, measured in the same run, for both decode loops (builder
graph: ``GqaBackend``, the CPU path; optimum graph: ``ConcatBackend``, the accelerator path).
Each round empties the cache and replays the first turn (not timed), so every timed second turn
finds what a real second turn finds: the first turn's prompt and answer. The systems alternate
inside each round; the best round counts. Both engines' greedy second answers (32 tokens) are
compared: "same tokens".

The SmolLM2 folder and exports are shared with bench_decode.py (``--cache``, default
$TMPDIR/openmaas-bench-decode). Tables go to stderr; the last stdout line is one JSON object.
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
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

SYSTEM = "You are a careful assistant. Answer questions about the document the user gives you, briefly and exactly."
PARAGRAPHS = [
    "The river town grew around a mill built in the eleventh century; its wheel turned for eight hundred years.",
    "Merchants came by boat in spring, bringing salt, cloth and iron, and left with grain, wool and timber.",
    "In the great flood of 1743 the lower streets stood under water for nine days, and the old bridge fell.",
    "A new stone bridge with five arches was finished in 1751; its builder, Anna Roth, is buried beside it.",
    "The railway reached the town in 1868, and within twenty years the boats had all but disappeared.",
    "Today the mill is a museum, the station a library, and the river is crossed by cyclists and walkers.",
]


def document(tokenizer, tokens: int) -> str:
    """About ``tokens`` tokens of varied text (numbered paragraphs: no block repeats another)."""
    out, i = [], 0
    while len(tokenizer("\n".join(out))["input_ids"]) < tokens:
        out.append(f"{i + 1}. {PARAGRAPHS[i % len(PARAGRAPHS)]}")
        i += 1
    return "\n".join(out)


def models(args) -> dict[str, Path]:
    from services.lib.mlkit.onnx_export import ensure_onnx

    if args.tiny:
        from services.lib.mlkit.tiny import build_tiny_model

        hf = args.cache / "tiny"
        if not (hf / "config.json").is_file():
            build_tiny_model(hf)
        return {"name": "tiny", "gqa": hf, "concat": ensure_onnx(hf, kind="optimum")}
    from benchmarks.bench_decode import build_models

    paths = build_models(args.cache, int4=False)
    return {"name": "SmolLM2-135M-Instruct fp32", "gqa": paths["hf"], "concat": paths["optimum"]}


def ttft(engine, ids) -> float:
    from services.lib.inference.params import SamplingParams

    start = time.perf_counter()
    engine.generate(ids, SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--context", type=int, default=1000, help="tokens of the first turn (about)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "openmaas-bench-decode")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of SmolLM2")
    args = parser.parse_args()

    from services.lib.inference.engine import Engine
    from services.lib.inference.params import SamplingParams

    paths = models(args)
    greedy = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    results: dict[str, dict] = {}
    for backend in ("gqa", "concat"):
        cached = Engine(paths[backend], max_model_len=2048, max_num_seqs=4)
        plain = Engine(paths[backend], max_model_len=2048, max_num_seqs=4, prefix_cache_bytes=0)
        tok = cached.tokenizer
        first = [{"role": "system", "content": SYSTEM},
                 {"role": "user", "content": document(tok, args.context) + "\n\nWhat is this document about?"}]
        first_ids = tok.apply_chat_template(first, add_generation_prompt=True)
        answer = plain.generate(first_ids, greedy).text
        second = first + [{"role": "assistant", "content": answer},
                          {"role": "user", "content": "Who built the stone bridge, and when?"}]
        second_ids = tok.apply_chat_template(second, add_generation_prompt=True)
        ttft(plain, second_ids)   # warm-up of both sessions
        ttft(cached, second_ids)
        times = {"with cache": [], "without": []}
        hits = 0
        for _ in range(args.rounds):
            cached.prefix_cache.clear()
            cached.generate(first_ids, greedy)           # the first turn: fills the cache (not timed)
            before = cached.prefix_cache.hits
            times["with cache"].append(ttft(cached, second_ids))
            hits = cached.prefix_cache.hits - before
            times["without"].append(ttft(plain, second_ids))
        cached.prefix_cache.clear()
        cached.generate(first_ids, greedy)
        same = (cached.generate(second_ids, greedy).choices[0].token_ids
                == plain.generate(second_ids, greedy).choices[0].token_ids)
        best = {k: min(v) * 1000 for k, v in times.items()}
        results[backend] = {"backend": cached.backend_name, "first_turn_tokens": len(first_ids),
                            "second_turn_tokens": len(second_ids), "cached_tokens": hits,
                            "ttft_ms": {k: round(v, 1) for k, v in best.items()},
                            "ratio": round(best["with cache"] / best["without"], 3), "same_tokens": same}
        cached.close()
        plain.close()

    table = Table(title=f"{paths['name']}: second-turn TTFT, best of {args.rounds} (ms)")
    for col in ("backend", "prompt tokens", "cached", "without cache", "with cache", "ratio", "same tokens"):
        table.add_column(col)
    for r in results.values():
        table.add_row(r["backend"], str(r["second_turn_tokens"]), str(r["cached_tokens"]),
                      f"{r['ttft_ms']['without']:.1f}", f"{r['ttft_ms']['with cache']:.1f}", f"{r['ratio']:.3f}",
                      "yes" if r["same_tokens"] else "NO")
    console.print(table)
    print(json.dumps({"model": paths["name"], "rounds": args.rounds, "loadavg": os.getloadavg(),
                      "results": results}))


if __name__ == "__main__":
    main()
