"""What a tuning job runs in its job process (``services.lib.jobs``): training and the LoRA merge.

Arguments and results are JSON; the worker names these functions by their entry strings (``TRAIN``,
``MERGE``). The worker imports this module for those names, so the trainer (it imports torch) is
imported by the entries, in the job process only.
"""
from __future__ import annotations

from pathlib import Path

from services.lib.jobs.executor import Channel, stop_requested

TRAIN = f"{__name__}:train_entry"
MERGE = f"{__name__}:merge_entry"


def train_entry(args: dict, channel: Channel) -> dict:
    """args: model_dir, examples, config (TrainConfig fields), output_dir, resume_from (or None),
    ranks (or None): {pool, cpus_per_rank, gpus_per_rank} to place the ranks on nodes of a Ray pool."""
    from services.lib.mlkit.training import TrainConfig, train

    ray_placement = None
    if args.get("ranks"):
        from services.lib.mlkit.training.ray_ranks import RayPlacement   # ray: cluster mode only

        ray_placement = RayPlacement(**args["ranks"])
    result = train(model_dir=Path(args["model_dir"]), examples=args["examples"], config=TrainConfig(**args["config"]),
                   output_dir=Path(args["output_dir"]),
                   resume_from=Path(args["resume_from"]) if args.get("resume_from") else None,
                   on_log=lambda record: channel.send("log", record=record),
                   # Waits for the parent: the checkpoint is stored before training goes on.
                   on_checkpoint=lambda iteration, folder: channel.ask("checkpoint", iteration=iteration,
                                                                       folder=str(folder)),
                   should_stop=lambda: stop_requested(channel), ray_placement=ray_placement)
    return {"iterations_done": result.iterations_done, "final_loss": result.final_loss, "stopped": result.stopped,
            "final_dir": str(result.final_dir) if result.final_dir else None, "rank_nodes": result.rank_nodes}


def merge_entry(args: dict, channel: Channel) -> str:
    """args: base_dir, adapter_dir, out_dir; the merged HF folder."""
    from services.lib.mlkit.training import merge_lora

    return str(merge_lora(base_dir=Path(args["base_dir"]), adapter_dir=Path(args["adapter_dir"]),
                          out_dir=Path(args["out_dir"])))
