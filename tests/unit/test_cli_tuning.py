"""Helpers of `maas tune`: the loss read from real job log lines, the ETA from the job's progress."""
from __future__ import annotations

from services.apps.cli.tuning_cmds import eta_seconds, fmt_eta, loss_points
from services.lib.mlkit.training.logs import log_line


def record(iteration: int, loss: float) -> dict:
    return {"iteration": iteration, "total_iterations": 20, "epoch": 1, "epochs": 2, "global_batch_size": 32,
            "elapsed_time_per_iteration_s": 0.8124, "learning_rate": 2e-5, "lm_loss": loss, "grad_norm": 0.8,
            "seq_len": 512, "tokens_per_sec_per_card": 10234.5}


def test_loss_points_come_from_the_workers_log_format():
    lines = [log_line(record(1, 1.5)), "checkpoint saved at iteration 1", log_line(record(2, 1.25))]
    assert loss_points(lines) == [(1, 1.5), (2, 1.25)]


def test_eta_is_remaining_iterations_times_the_latest_step_time():
    job = {"progress": {"iteration": 5, "total_iterations": 20, "elapsed_time_per_iteration_s": 2.0}}
    assert eta_seconds(job) == 30.0
    assert fmt_eta(30.0) == "0:30" and fmt_eta(3725) == "1:02:05" and fmt_eta(None) == "-:--"
    assert eta_seconds({"progress": {"iteration": 0, "total_iterations": 20}}) is None
