#!/usr/bin/env python
"""Decode speed of the inference engine on SmolLM2-135M-Instruct, against the usual baselines.

    python benchmarks/bench_decode.py [--tokens 64] [--rounds 3] [--cache DIR] [--quick] [--skip-int4]

Single stream, greedy, a fixed chat prompt, ``--tokens`` new tokens (EOS ignored), end to end
(prefill included), best of ``--rounds`` rounds. The systems are measured in turn inside each round,
so a load change on the machine hits all of them alike. Ratios are against baselines measured in
the same run:

- transformers ``generate`` (torch, fp32)
- optimum ``ORTModelForCausalLM.generate`` on the optimum ONNX export (fp32)
- onnxruntime-genai on the model builder's graph (fp32, and int4 = builder's MatMulNBits RTN)
- ours, builder graph (``GqaBackend``: shared KV buffer, IO binding) fp32 and int4 — the CPU path;
  with ``--threads`` onnxruntime threads (default: genai's own rule, logical CPUs / 2, so both
  use the same number) and once more with onnxruntime's default (all cores)
- ours, optimum graph (``ConcatBackend``) fp32, and int4 made with onnxruntime's
  MatMulNBitsQuantizer (block 32, accuracy_level 4) — the path of CANN/CUDA and of the
  compression jobs' models

Then total throughput of our engine with 1/4/8 concurrent streams (continuous batching; each stream
its own prompt). Every system's greedy tokens are compared with transformers' (fp32) or with
genai's (builder int4): "same tokens" in the table.

Wall-clock tok/s is what users see, but on a shared machine it moves with the load of others
(the load average is in the JSON). "CPU ms/token" (this process's CPU time per generated token,
best round) moves much less, so compare that column when the machine is busy.

The SmolLM2 HF folder and the exports are built once in ``--cache`` (default
$TMPDIR/openmaas-bench-decode) and reused. Tables go to stderr; the last stdout line is one JSON
object with every figure. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a rainbow forms, step by step.",
    "Give me three tips for learning a new language.",
    "What are the main differences between cats and dogs as pets?",
    "Describe a perfect weekend in the mountains.",
    "How does a bicycle stay upright while moving?",
    "Write a polite email asking for a meeting next week.",
    "Summarize the plot of a detective novel you invent.",
]


def build_models(cache: Path, *, int4: bool) -> dict[str, Path]:
    from services.lib.mlkit.onnx_export import ensure_onnx, export_gqa_model

    hf = cache / "smollm2"
    if not (hf / "config.json").is_file():
        from services.lib.mlkit.smollm2 import convert_to_hf

        console.print("converting SmolLM2 from GGUF ...")
        convert_to_hf(hf)
    paths = {"hf": hf}
    console.print("exports (cached) ...")
    paths["gqa"] = ensure_onnx(hf, kind="gqa")
    paths["optimum"] = ensure_onnx(hf, kind="optimum")
    if int4:
        if not (cache / "gqa-int4" / "onnx_export.json").is_file():
            export_gqa_model(model_dir=hf, out_dir=cache / "gqa-int4", precision="int4")
        paths["gqa-int4"] = cache / "gqa-int4"
        if not (cache / "optimum-int4-acc4" / "model.onnx").is_file():
            quantize_int4(paths["optimum"], cache / "optimum-int4-acc4")
        paths["optimum-int4"] = cache / "optimum-int4-acc4"
    return paths


def quantize_int4(src: Path, dst: Path) -> None:
    """The optimum export with every MatMul as MatMulNBits (int4, block 32, RTN, int8 compute on CPU
    as the builder does: accuracy_level 4)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    console.print("int4 (MatMulNBitsQuantizer) of the optimum export ...")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.onnx*"))
    quant = MatMulNBitsQuantizer(onnx.load(str(src / "model.onnx")), block_size=32, is_symmetric=True,
                                 accuracy_level=4)
    quant.process()
    quant.model.save_model_to_file(str(tmp / "model.onnx"), use_external_data_format=False)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


# -- one runner per system: run(ids) -> generated token ids -------------------------------------

def transformers_runner(hf: Path, n: int):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()

    def run(ids):
        inp = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False)
        return out[0, len(ids):].tolist()
    return run


def optimum_runner(folder: Path, n: int):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    model = ORTModelForCausalLM.from_pretrained(folder, use_cache=True, provider="CPUExecutionProvider")

    def run(ids):
        inp = torch.tensor([ids])
        out = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=n,
                             min_new_tokens=n, do_sample=False)
        return out[0, len(ids):].tolist()
    return run


def genai_runner(folder: Path, n: int):
    import onnxruntime_genai as og

    model = og.Model(str(folder))

    def run(ids):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        out = []
        while not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        return out
    return run


def engine_runner(engine, n: int):
    from services.lib.inference.params import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)

    def run(ids):
        return engine.generate(ids, params).choices[0].token_ids
    return run


def timed(run, ids) -> tuple[float, float, list[int]]:
    """(wall seconds, CPU seconds of this process, tokens)."""
    start, cpu = time.perf_counter(), time.process_time()
    tokens = run(ids)
    return time.perf_counter() - start, time.process_time() - cpu, tokens


def concurrent_throughput(engine, prompts: list[list[int]], n: int) -> tuple[float, float]:
    """(total generated tokens per second, CPU ms per token) with all prompts submitted at once."""
    from services.lib.inference.params import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    counts = [0] * len(prompts)

    def one(i):
        counts[i] = engine.generate(prompts[i], params).completion_tokens

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    start, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return sum(counts) / wall, 1000 * cpu / sum(counts)


def _same(name: str, tokens: dict[str, list[int]], n: int) -> str:
    """Greedy tokens against the reference of the same weights: transformers for fp32, genai for
    the builder's int4; the separately quantized optimum int4 model has no reference here."""
    if name in ("transformers fp32", "onnxruntime-genai int4"):
        return "ref"
    ref = tokens.get("onnxruntime-genai int4") if "builder graph" in name and "int4" in name else \
        None if "int4" in name else tokens["transformers fp32"]
    if ref is None:
        return "-"
    return "yes" if tokens[name] == ref else f"{sum(a == b for a, b in zip(tokens[name], ref))}/{n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "openmaas-bench-decode")
    parser.add_argument("--quick", action="store_true", help="1 round, 32 tokens, no int4")
    parser.add_argument("--skip-int4", action="store_true")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="onnxruntime threads of our engines (default: genai's own rule, logical CPUs / 2)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.tokens, args.skip_int4 = 1, 32, True
    n = args.tokens
    os.environ.setdefault("MAAS_INFERENCE_PROVIDER", "CPUExecutionProvider")

    from transformers import AutoTokenizer

    from services.lib.inference.engine import Engine

    paths = build_models(args.cache, int4=not args.skip_int4)
    tok = AutoTokenizer.from_pretrained(paths["hf"])
    prompts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
               for p in PROMPTS]
    ids = prompts[0]

    console.print("loading ...")
    def engine(folder, threads=args.threads):
        # No prefix cache: every run repeats the same prompts, and a cached prefill is not what is measured.
        return Engine(folder, max_model_len=1024, max_num_seqs=8, threads=threads, prefix_cache_bytes=0)

    engines = {"ours fp32 (builder graph)": engine(paths["gqa"]),
               "ours fp32 (builder graph, all cores)": engine(paths["gqa"], threads=None),
               "ours fp32 (optimum graph)": engine(paths["optimum"])}
    systems = {
        "transformers fp32": transformers_runner(paths["hf"], n),
        "optimum ORTModel fp32": optimum_runner(paths["optimum"], n),
        "onnxruntime-genai fp32": genai_runner(paths["gqa"], n),
    }
    systems.update({name: engine_runner(e, n) for name, e in engines.items()})
    if not args.skip_int4:
        engines["ours int4 (builder graph)"] = engine(paths["gqa-int4"])
        engines["ours int4 (builder graph, all cores)"] = engine(paths["gqa-int4"], threads=None)
        engines["ours int4 (optimum graph, MatMulNBits)"] = engine(paths["optimum-int4"])
        systems["onnxruntime-genai int4"] = genai_runner(paths["gqa-int4"], n)
        for name in ("ours int4 (builder graph)", "ours int4 (builder graph, all cores)",
                     "ours int4 (optimum graph, MatMulNBits)"):
            systems[name] = engine_runner(engines[name], n)

    for run in systems.values():     # warm-up (first-run allocations, thread pools)
        run(ids[:8])
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    tokens: dict[str, list[int]] = {}
    for r in range(args.rounds):
        console.print(f"round {r + 1}/{args.rounds} ...")
        for name, run in systems.items():
            seconds, cpu, out = timed(run, ids)
            best[name] = min(best.get(name, float("inf")), seconds)
            best_cpu[name] = min(best_cpu.get(name, float("inf")), cpu)
            tokens[name] = out
    rates = {name: len(tokens[name]) / best[name] for name in systems}
    cpu_ms = {name: 1000 * best_cpu[name] / len(tokens[name]) for name in systems}

    table = Table(title=f"SmolLM2-135M single stream, {n} greedy tokens, best of {args.rounds} (tok/s)")
    for col in ("system", "tok/s", "÷ transformers", "÷ optimum", "÷ genai fp32", "CPU ms/token", "same tokens"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name in systems:
        table.add_row(name, f"{rates[name]:.1f}", f"{rates[name] / rates['transformers fp32']:.2f}",
                      f"{rates[name] / rates['optimum ORTModel fp32']:.2f}",
                      f"{rates[name] / rates['onnxruntime-genai fp32']:.2f}", f"{cpu_ms[name]:.1f}",
                      _same(name, tokens, n))
    console.print(table)

    del systems
    gc.collect()
    concurrency: dict[str, dict[int, float]] = {}
    conc_cpu: dict[str, dict[int, float]] = {}
    for name, engine in engines.items():
        concurrency[name], conc_cpu[name] = {}, {}
        for k in (1, 4, 8):
            runs = [concurrent_throughput(engine, prompts[:k], n) for _ in range(args.rounds)]
            concurrency[name][k] = max(r[0] for r in runs)
            conc_cpu[name][k] = min(r[1] for r in runs)
    table = Table(title=f"Our engine, total throughput with concurrent streams ({n} tokens each)")
    for col in ("engine", "1 stream tok/s", "4 streams", "8 streams", "8 ÷ 1", "CPU ms/token 1 → 8"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for name, row in concurrency.items():
        table.add_row(name, *(f"{row[k]:.1f}" for k in (1, 4, 8)), f"{row[8] / row[1]:.2f}",
                      f"{conc_cpu[name][1]:.1f} → {conc_cpu[name][8]:.1f}")
    console.print(table)

    for engine in engines.values():
        engine.close()
    print(json.dumps({
        "tokens": n, "rounds": args.rounds, "threads": args.threads, "cpus": os.cpu_count(),
        "single_stream_tok_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_vs_genai_fp32": {k: round(v / rates["onnxruntime-genai fp32"], 2) for k, v in rates.items()},
        "cpu_ms_per_token": {k: round(v, 2) for k, v in cpu_ms.items()},
        "same_tokens": {k: _same(k, tokens, n) for k in rates},
        "concurrent_total_tok_s": {k: {str(s): round(v, 1) for s, v in row.items()} for k, row in concurrency.items()},
        "scaling_8_over_1": {k: round(row[8] / row[1], 2) for k, row in concurrency.items()},
        "concurrent_cpu_ms_per_token": {k: {str(s): round(v, 2) for s, v in row.items()} for k, row in conc_cpu.items()},
        "load_average": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
