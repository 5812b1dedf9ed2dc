"""Where per-channel scales can be folded in a decoder layer (Llama / Qwen2 / Mistral families).

Both SmoothQuant and AWQ multiply the input channels of some linears by ``s`` and divide the output
channels of the operation feeding them by ``s``, which leaves the model's function unchanged. In
these architectures four such groups exist per layer:

- ``attn_in``: input_layernorm → q/k/v_proj
- ``mlp_in``: post_attention_layernorm → gate/up_proj
- ``down``: up_proj → down_proj (SwiGLU: act(gate) * up is linear in up's output channels)
- ``o``: v_proj → o_proj; with grouped-query attention one v channel feeds ``heads / kv_heads``
  o_proj input channels, so a scale per v channel is repeated over its query heads.

Layer inputs are captured once (the "catcher" used by AWQ implementations) so a single layer can
be re-run on calibration data without running the whole model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


class UnsupportedModel(ValueError):
    pass


@dataclass
class ScaleGroup:
    name: str
    prev: nn.Module                  # RMSNorm or Linear whose output channels get 1/s
    linears: list[nn.Linear]         # whose input channels get s
    repeat: int = 1                  # GQA: each prev channel feeds this many linear input channels
    head_dim: int = 0
    inspect: nn.Module | None = None  # module whose output AWQ compares (None: the linears)

    @property
    def channels(self) -> int:
        return self.prev.weight.shape[0]

    def expand(self, s: torch.Tensor) -> torch.Tensor:
        """Per prev-channel scales → per linear-input-channel scales."""
        if self.repeat == 1:
            return s
        kv = s.numel() // self.head_dim
        return s.view(kv, 1, self.head_dim).expand(kv, self.repeat, self.head_dim).reshape(-1)

    def reduce(self, x: torch.Tensor, how: str = "max") -> torch.Tensor:
        """Per linear-input-channel statistics → per prev-channel (max or mean over the repeats)."""
        if self.repeat == 1:
            return x
        kv = x.numel() // (self.repeat * self.head_dim)
        x = x.view(kv, self.repeat, self.head_dim)
        return (x.amax(1) if how == "max" else x.mean(1)).reshape(-1)

    @torch.no_grad()
    def fold(self, s: torch.Tensor) -> None:
        """Divide prev's outputs by s and multiply the linears' inputs by s (function unchanged)."""
        s = s.to(self.prev.weight.dtype)
        if isinstance(self.prev, nn.Linear):
            self.prev.weight.div_(s.view(-1, 1))
        else:
            self.prev.weight.div_(s)
        if getattr(self.prev, "bias", None) is not None:
            self.prev.bias.div_(s)
        wide = self.expand(s)
        for linear in self.linears:
            linear.weight.mul_(wide.view(1, -1))


def check_supported(model) -> None:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModel(f"model_type '{model_type}' is not supported for compression "
                               f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")


def decoder_layers(model) -> nn.ModuleList:
    check_supported(model)
    return model.model.layers


def scale_groups(model, layer) -> list[ScaleGroup]:
    cfg = model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    attn, mlp = layer.self_attn, layer.mlp
    return [
        ScaleGroup("attn_in", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], inspect=attn),
        ScaleGroup("o", attn.v_proj, [attn.o_proj], repeat=heads // kv_heads, head_dim=head_dim),
        ScaleGroup("mlp_in", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], inspect=mlp),
        ScaleGroup("down", mlp.up_proj, [mlp.down_proj]),
    ]


@dataclass
class LayerInputs:
    """What the first decoder layer receives for each calibration window."""
    hidden: list[torch.Tensor] = field(default_factory=list)
    kwargs: list[dict] = field(default_factory=list)


class _Caught(Exception):
    pass


def batches(windows: list[list[int]], *, batch_size: int = 8) -> list[torch.Tensor]:
    """Windows of equal length stacked into [batch, seq] tensors (one forward call per batch)."""
    out: list[torch.Tensor] = []
    by_len: dict[int, list[list[int]]] = {}
    for w in windows:
        by_len.setdefault(len(w), []).append(w)
    for group in by_len.values():
        out += [torch.tensor(group[i:i + batch_size]) for i in range(0, len(group), batch_size)]
    return out


@torch.no_grad()
def capture_layer_inputs(model, windows: list[list[int]], *, batch_size: int = 8) -> LayerInputs:
    """Run the embeddings only and keep each batch's first-layer inputs (hidden, kwargs)."""
    layers = decoder_layers(model)
    first = layers[0]
    captured = LayerInputs()

    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.hidden.append(hidden)
        captured.kwargs.append({k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache")})
        raise _Caught

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in batches(windows, batch_size=batch_size):
            try:
                model(ids, use_cache=False)
            except _Caught:
                pass
    finally:
        handle.remove()
    return captured


def run_layer(layer, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def run_inspect(group: ScaleGroup, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """Output of the module AWQ compares for this group, on the group's input x."""
    if group.inspect is None:
        return torch.cat([linear(x) for linear in group.linears], dim=-1)
    if group.name == "attn_in":
        return group.inspect(hidden_states=x, position_embeddings=kwargs["position_embeddings"],
                             attention_mask=kwargs.get("attention_mask"))[0]
    return group.inspect(x)


@torch.no_grad()
def record_linear_inputs(layer, groups: list[ScaleGroup], hidden: list[torch.Tensor],
                         kwargs: list[dict]) -> tuple[dict, list[torch.Tensor]]:
    """Run the layer on every window; returns ({id(first linear): [inputs]}, layer outputs)."""
    firsts = {id(g.linears[0]): g.linears[0] for g in groups}
    inputs: dict[int, list[torch.Tensor]] = {k: [] for k in firsts}
    handles = [linear.register_forward_hook(
        lambda m, args, _out, key=key: inputs[key].append(args[0].detach())) for key, linear in firsts.items()]
    try:
        outputs = [run_layer(layer, h, kw) for h, kw in zip(hidden, kwargs)]
    finally:
        for h in handles:
            h.remove()
    return inputs, outputs
