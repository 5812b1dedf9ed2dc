"""Megatron-style log lines: the strings users search job logs for (guide chapter 6, "lm loss")."""
from __future__ import annotations


def log_line(record: dict) -> str:
    """One line per iteration, e.g.

    `` iteration        3/      20 | epoch 1/2 | consumed samples:           96 | elapsed time per iteration (ms): 812.4 |
    learning rate: 2.000000E-05 | global batch size:    32 | lm loss: 1.234567E+00 | grad norm: 0.812 | SEQ_LEN: 512 |
    tokens per sec per card: 10234.5 |``

    Throughput as the guide computes it is global batch size x SEQ_LEN / time / cards; batches
    here are padded per micro-batch, not to SEQ_LEN, so the printed figure counts the real tokens.
    """
    it, total = record["iteration"], record["total_iterations"]
    parts = [f" iteration {it:>8}/{total:>8}"]
    if record.get("epoch") is not None:
        parts.append(f"epoch {record['epoch']}/{record.get('epochs', '?')}")
    parts.append(f"consumed samples: {record.get('consumed_samples', it * record['global_batch_size']):>12}")
    parts.append(f"elapsed time per iteration (ms): {record['elapsed_time_per_iteration_s'] * 1000:.1f}")
    parts.append(f"learning rate: {record['learning_rate']:.6E}")
    parts.append(f"global batch size: {record['global_batch_size']:>5}")
    parts.append(f"lm loss: {record['lm_loss']:.6E}")
    if record.get("grad_norm") is not None:
        parts.append(f"grad norm: {record['grad_norm']:.3f}")
    parts.append(f"SEQ_LEN: {record['seq_len']}")
    parts.append(f"tokens per sec per card: {record['tokens_per_sec_per_card']:.1f}")
    return " | ".join(parts) + " |"

