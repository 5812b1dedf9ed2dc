"""What a compression job runs in its job process (``services.lib.jobs``).

Arguments and results are JSON; the worker names ``compress_entry`` by ``COMPRESS``. The pipeline
module imports torch, optimum and onnxruntime only inside ``compress``, i.e. in the job process.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from services.lib.jobs.executor import Channel
from services.lib.mlkit.quantize.pipeline import Cancelled, CompressionConfig, compress

COMPRESS = f"{__name__}:compress_entry"


def compress_entry(args: dict, channel: Channel) -> dict:
    """args: model_dir, out_dir, work_dir, config (CompressionConfig fields), calibration_texts (or None).

    Progress is a question: the answer says whether the job was cancelled (deleted, stopped)."""
    def on_progress(fraction: float, step: str) -> None:
        if channel.ask("progress", fraction=fraction, step=step):
            raise Cancelled

    outcome = compress(model_dir=Path(args["model_dir"]), out_dir=Path(args["out_dir"]),
                       config=CompressionConfig(**args["config"]), work_dir=Path(args["work_dir"]),
                       calibration_texts=args.get("calibration_texts"), on_progress=on_progress,
                       on_log=lambda line: channel.send("log", line=line))
    return asdict(outcome)
