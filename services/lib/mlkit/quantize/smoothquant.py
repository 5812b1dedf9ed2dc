"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights before int8.

Per input channel j of each scale group: ``s_j = max|X_j|^α / max|W_j|^(1-α)``, with ``max|X_j|``
over the calibration tokens and ``max|W_j|`` over every linear that reads the channel. The inputs
are divided by ``s`` (folded into the preceding norm or linear) and the weights multiplied by it, so
the float model is unchanged while activations become flatter and easier to quantize. α is the
migration strength: 0 leaves activations alone, 1 moves all of their range into the weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

import torch

from services.lib.mlkit.quantize.modules import batches, decoder_layers, scale_groups

DEFAULT_GROUPS = ("attn_in", "mlp_in", "down", "o")
# A linear keeps float activations (W8A16) when its input range after smoothing is this many times the
# median of the same linear over all layers. On SmolLM2-135M that is the down_proj of the few layers with
# "massive activations" (inputs ~120 where the median layer has ~5): their int8 activation noise alone
# moved the first answer token of chat prompts (KL to float32 halves when they stay float).
OUTLIER_FACTOR = 3.0


@dataclass
class SmoothReport:
    alpha: float
    groups: tuple[str, ...]
    layers: int
    max_act_before: float   # largest per-channel activation range the int8 quantizer would see
    max_act_after: float
    # (group, linear module names, largest input after smoothing) for every scale group of every layer
    inputs: list[tuple[str, list[str], float]] = field(default_factory=list)


@torch.no_grad()
def activation_absmax(model, windows: list[list[int]], *, progress=None) -> dict[int, torch.Tensor]:
    """max |x| per input channel of every linear that starts a scale group (one pass, fp32)."""
    stats: dict[int, torch.Tensor] = {}
    handles = []
    for layer in decoder_layers(model):
        for group in scale_groups(model, layer):
            linear = group.linears[0]

            def hook(_m, args, _out, key=id(linear)):
                x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
                stats[key] = torch.maximum(stats[key], x) if key in stats else x
            handles.append(linear.register_forward_hook(hook))
    model.eval()
    try:
        todo = batches(windows, batch_size=4)
        for i, ids in enumerate(todo, 1):
            model(ids, use_cache=False)
            if progress:
                progress(i / len(todo))
    finally:
        for h in handles:
            h.remove()
    return stats


def smoothing_scales(group, act_max: torch.Tensor, alpha: float) -> torch.Tensor:
    act = group.reduce(act_max, "max").clamp(min=1e-5)
    w_max = torch.stack([l.weight.abs().amax(0) for l in group.linears]).amax(0).float()
    w_max = group.reduce(w_max, "max").clamp(min=1e-5)
    return (act.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def smooth(model, windows: list[list[int]], *, alpha: float = 0.5,
           groups: tuple[str, ...] = DEFAULT_GROUPS, progress=None) -> SmoothReport:
    """Fold SmoothQuant scales into ``model`` in place; returns what it did."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    stats = activation_absmax(model, windows, progress=progress)
    before = after = 0.0
    layers = decoder_layers(model)
    names = {id(m): name for name, m in model.named_modules()}
    inputs: list[tuple[str, list[str], float]] = []
    for layer in layers:
        for group in scale_groups(model, layer):
            act = stats[id(group.linears[0])]
            linears = [names[id(linear)] for linear in group.linears]
            if group.name not in groups:
                inputs.append((group.name, linears, float(act.max())))
                continue
            s = smoothing_scales(group, act, alpha)
            smoothed = float((group.reduce(act, "max") / s).max())
            before = max(before, float(act.max()))
            after = max(after, smoothed)
            inputs.append((group.name, linears, smoothed))
            group.fold(s)
    return SmoothReport(alpha=alpha, groups=tuple(groups), layers=len(layers),
                        max_act_before=before, max_act_after=after, inputs=inputs)


def activation_outliers(report: SmoothReport, *, factor: float = OUTLIER_FACTOR) -> list[str]:
    """Linears whose inputs stay far wider than the same linear's in the other layers (see OUTLIER_FACTOR)."""
    typical = {g: median(m for name, _, m in report.inputs if name == g) for g, _, _ in report.inputs}
    return [linear for g, linears, m in report.inputs if m > factor * typical[g] for linear in linears]
