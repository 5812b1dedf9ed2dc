"""AWQ (Lin et al., 2024): activation-aware weight scaling before block-wise int4.

Layer by layer, on calibration activations:

1. **Scale search.** For each scale group (see ``modules``), the salient input channels are the ones
   with large mean |x|. For α on a grid in [0, 1], ``s = mean|x|^α`` (normalised), the group's
   weights are scaled by ``s``, fake-quantized exactly as onnxruntime's MatMulNBits will quantize
   them (asymmetric, blocks along the input dimension, zero inside the range), scaled back, and the
   output of the module the group feeds (attention block, MLP, or the linear itself) is compared with
   the float output. The best ``s`` is folded into the model (float function unchanged).
2. **Clip search** (optional). Per output channel and block, the weight range is shrunk by a ratio
   in [0.5, 1] when that lowers the block's output error on calibration inputs; the clipped weights
   are written back so the quantizer later sees the clipped range.

Zero points: ``float_zero=False`` is the usual AWQ format (integer zero point, zero kept in the
range, as onnxruntime's own block quantizer writes it); ``float_zero=True`` maps each block's
[min, max] exactly onto the 16 levels with a float zero point (MatMulNBits accepts float zero
points; GGUF's Q4_1 is the same format). The search, the clipping and the final packing must use the
same one.

The result is a float model that quantizes with much less error; ``onnx_quant`` does the int4 packing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from services.lib.mlkit.quantize.modules import (ScaleGroup, capture_layer_inputs, decoder_layers, record_linear_inputs,
                                             run_inspect, scale_groups)

CLIP_SKIP = ("q_proj", "k_proj")   # their errors are absorbed by the softmax; AWQ leaves them unclipped


@dataclass
class AwqReport:
    bits: int
    block_size: int
    n_grid: int
    clip: bool
    layers: int
    alphas: dict[str, list[float | None]] = field(default_factory=dict)   # chosen α per group, per layer
                                                                          # (None: no scaling won)
    error_reduction: float = 0.0   # mean (RTN error - AWQ error) / RTN error over the searched groups


def _dequantized(blocks: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, *, bits: int,
                 float_zero: bool) -> torch.Tensor:
    """Blocks [..., B] quantized onto 2^bits levels spanning [lo, hi], dequantized."""
    qmax = 2 ** bits - 1
    scale = ((hi - lo) / qmax).clamp(min=1e-10)
    if float_zero:   # levels lo + k·scale: the block's range exactly
        q = ((blocks.clamp(lo, hi) - lo) / scale).round().clamp(0, qmax)
        return q * scale + lo
    zero = (-lo / scale).round().clamp(0, qmax)   # integer zero point: levels are multiples of scale
    q = ((blocks.clamp(lo, hi) / scale).round() + zero).clamp(0, qmax)
    return (q - zero) * scale


def block_range(blocks: torch.Tensor, *, float_zero: bool) -> tuple[torch.Tensor, torch.Tensor]:
    hi, lo = blocks.amax(-1, keepdim=True), blocks.amin(-1, keepdim=True)
    if float_zero:
        return lo, hi
    return lo.clamp(max=0), hi.clamp(min=0)   # onnxruntime's quantizer keeps 0 representable


def fake_quantize(w: torch.Tensor, *, bits: int, block_size: int, float_zero: bool = False) -> torch.Tensor:
    """Quantize-dequantize ``w`` [out, in] the way MatMulNBits does (asymmetric, blocks along ``in``)."""
    out_f, in_f = w.shape
    pad = (-in_f) % block_size
    blocks = F.pad(w, (0, pad)).reshape(out_f, -1, block_size)
    lo, hi = block_range(blocks, float_zero=float_zero)
    deq = _dequantized(blocks, lo, hi, bits=bits, float_zero=float_zero)
    return deq.reshape(out_f, -1)[:, :in_f]


def _outputs(group: ScaleGroup, inputs: list[torch.Tensor], kwargs: list[dict]) -> list[torch.Tensor]:
    return [run_inspect(group, x, kw) for x, kw in zip(inputs, kwargs)]


def _loss(ref: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    total = sum(float((a - b).float().pow(2).sum()) for a, b in zip(ref, got))
    return total / sum(a.numel() for a in ref)


def _weight_mean(group: ScaleGroup, block_size: int) -> torch.Tensor:
    """Mean over output channels of |w| relative to its block's max, per input channel (AWQ's w_mean)."""
    w = torch.cat([l.weight.detach() for l in group.linears]).abs().float()
    out_f, in_f = w.shape
    blocks = F.pad(w, (0, (-in_f) % block_size)).view(out_f, -1, block_size)
    relative = (blocks / (blocks.amax(-1, keepdim=True) + 1e-6)).view(out_f, -1)[:, :in_f]
    return group.reduce(relative.mean(0), "mean")


@torch.no_grad()
def search_scales(group: ScaleGroup, inputs: list[torch.Tensor], kwargs: list[dict], *, bits: int,
                  block_size: int, n_grid: int, search_batches: int | None = None, duo: bool = False,
                  float_zero: bool = False) -> tuple[torch.Tensor, float | None, float, float]:
    """Best per-channel scales for a group: (s, α or None for no scaling, plain RTN loss, best loss).

    Candidates: no scaling, and for α on the grid ``s = mean|x|^α`` or, with ``duo`` (AutoAWQ's
    default), ``s = mean|x|^α / w_mean^(1-α)`` which also weighs how large each channel's weights are
    within their blocks. Statistics come from all ``inputs``; the loss from the first
    ``search_batches`` of them.
    """
    x_mean = torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs]).abs().float().mean(0)
    x_mean = group.reduce(x_mean, "mean")
    w_mean = _weight_mean(group, block_size) if duo else None
    inputs, kwargs = inputs[:search_batches], kwargs[:search_batches]
    reference = _outputs(group, inputs, kwargs)
    originals = [l.weight.detach().clone() for l in group.linears]

    def loss_with(s: torch.Tensor) -> float:
        wide = group.expand(s).view(1, -1)
        for linear, w in zip(group.linears, originals):
            linear.weight.copy_(fake_quantize(w * wide, bits=bits, block_size=block_size,
                                              float_zero=float_zero) / wide)
        return _loss(reference, _outputs(group, inputs, kwargs))

    try:
        ones = torch.ones_like(x_mean)
        rtn_loss = loss_with(ones)
        best = (rtn_loss, ones, None)
        for i in range(n_grid):
            alpha = i / n_grid
            s = x_mean.pow(alpha)
            if w_mean is not None:
                s = s / (w_mean.pow(1 - alpha) + 1e-4)
            s = s.clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()
            loss = loss_with(s)
            if loss < best[0]:
                best = (loss, s.clone(), alpha)
    finally:
        for linear, w in zip(group.linears, originals):
            linear.weight.copy_(w)
    return best[1], best[2], rtn_loss, best[0]


@torch.no_grad()
def search_clip(linear, x: torch.Tensor, *, bits: int, block_size: int, n_grid: int = 20,
                max_shrink: float = 0.5, n_tokens: int = 512, float_zero: bool = False) -> None:
    """Shrink each (output channel, block) range where that lowers its output error; writes the weights.

    The error of block g of output channel o is mean_t (x[t, g] · (deq(w[o, g]) - w[o, g]))², computed
    for all blocks at once as a batched matmul per ratio.
    """
    w = linear.weight.detach()
    out_f, in_f = w.shape
    if in_f % block_size:
        return   # padded tail blocks: leave such layers unclipped
    x = x.reshape(-1, in_f)
    x = x[torch.linspace(0, x.shape[0] - 1, min(n_tokens, x.shape[0])).long()].float()
    n_blocks = in_f // block_size
    xb = x.view(-1, n_blocks, block_size).transpose(0, 1)          # [G, T, B]
    wb = w.float().view(out_f, n_blocks, block_size)               # [O, G, B]
    lo0, hi0 = block_range(wb, float_zero=float_zero)
    # Integer zero points shrink the range towards 0 (which stays a level); float ones towards its middle.
    mid = (hi0 + lo0) / 2 if float_zero else torch.zeros_like(hi0)
    best_err = torch.full((out_f, n_blocks), float("inf"))
    best_hi, best_lo = hi0.clone(), lo0.clone()
    for i in range(int(max_shrink * n_grid)):
        ratio = 1 - i / n_grid
        hi, lo = mid + (hi0 - mid) * ratio, mid + (lo0 - mid) * ratio
        delta = _dequantized(wb, lo, hi, bits=bits, float_zero=float_zero) - wb   # [O, G, B]
        err = torch.bmm(xb, delta.permute(1, 2, 0)).pow(2).mean(1).T  # [G, T, O] -> [O, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_hi = torch.where(better.unsqueeze(-1), hi, best_hi)
        best_lo = torch.where(better.unsqueeze(-1), lo, best_lo)
    w.copy_(wb.clamp(best_lo, best_hi).view(out_f, in_f).to(w.dtype))


@torch.no_grad()
def apply_awq(model, windows: list[list[int]], *, bits: int = 4, block_size: int = 32, n_grid: int = 20,
              clip: bool = True, search_tokens: int = 4096, duo: bool = False, float_zero: bool = False,
              progress=None) -> AwqReport:
    """Search and fold AWQ scales (and clipping) into ``model`` in place, layer by layer.

    The channel statistics (mean |x|) use every calibration window; the grid search compares module
    outputs on the first ``search_tokens`` of them, which bounds its cost (n_grid forward passes of
    each attention block and MLP per layer).
    """
    model.eval()
    captured = capture_layer_inputs(model, windows, batch_size=max(1, search_tokens // max(map(len, windows))))
    hidden, kwargs = captured.hidden, captured.kwargs
    n_search, seen = 0, 0
    while n_search < len(hidden) and seen < search_tokens:
        seen += hidden[n_search].shape[0] * hidden[n_search].shape[1]
        n_search += 1
    layers = decoder_layers(model)
    report = AwqReport(bits=bits, block_size=block_size, n_grid=n_grid, clip=clip, layers=len(layers))
    reductions: list[float] = []
    for index, layer in enumerate(layers):
        groups = scale_groups(model, layer)
        inputs, outputs = record_linear_inputs(layer, groups, hidden, kwargs)
        for group in groups:
            x = inputs[id(group.linears[0])]
            s, alpha, rtn, best = search_scales(group, x, kwargs, bits=bits, block_size=block_size, n_grid=n_grid,
                                                search_batches=n_search, duo=duo, float_zero=float_zero)
            group.fold(s)
            # The recorded inputs of this group's linears are now x / s.
            wide = group.expand(s)
            inputs[id(group.linears[0])] = [xi / wide for xi in x]
            report.alphas.setdefault(group.name, []).append(alpha)
            if rtn and rtn > 0:
                reductions.append((rtn - best) / rtn)
        if clip:
            for group in groups:
                for linear in group.linears:
                    name = next((n for n, m in layer.named_modules() if m is linear), "")
                    if not name.endswith(CLIP_SKIP):
                        x = torch.cat([xi.reshape(-1, linear.in_features) for xi in inputs[id(group.linears[0])]])
                        search_clip(linear, x, bits=bits, block_size=block_size, float_zero=float_zero)
        hidden = outputs
        if progress:
            progress((index + 1) / len(layers))
    report.error_reduction = sum(reductions) / len(reductions) if reductions else 0.0
    return report


@dataclass(frozen=True)
class LinearError:
    name: str
    count: int            # parameters
    int_zero: float       # relative output error ||x(Q(W)-W)ᵀ||² / ||xWᵀ||² with integer zero points
    float_zero: float     # the same with float zero points

    @property
    def gain(self) -> float:
        """What float zero points save on this linear (its extra bytes buy this much)."""
        return self.int_zero - self.float_zero


@torch.no_grad()
def zero_point_errors(model, windows: list[list[int]], *, bits: int, block_size: int) -> list[LinearError]:
    """Every decoder linear's relative output error at ``bits`` on the calibration windows, with
    integer and with float zero points (after AWQ: the weights as they will be packed)."""
    from services.lib.mlkit.quantize.modules import batches

    linears = {m: n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    deltas = {m: (fake_quantize(m.weight, bits=bits, block_size=block_size) - m.weight,
                  fake_quantize(m.weight, bits=bits, block_size=block_size, float_zero=True) - m.weight)
              for m in linears}
    sums = {m: [0.0, 0.0, 0.0] for m in linears}

    def hook(module, args, out):
        x = args[0].reshape(-1, args[0].shape[-1])
        entry = sums[module]
        for k, delta in enumerate(deltas[module]):
            entry[k] += float((x @ delta.T).pow(2).sum())
        entry[2] += float(out.pow(2).sum())

    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        for ids in batches(windows, batch_size=2):
            model(ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [LinearError(name=n, count=m.weight.numel(), int_zero=sums[m][0] / max(sums[m][2], 1e-12),
                        float_zero=sums[m][1] / max(sums[m][2], 1e-12)) for m, n in linears.items()]
