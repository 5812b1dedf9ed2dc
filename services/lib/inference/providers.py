"""Execution providers for the engine: CANN (Ascend NPU), then CUDA, then CPU, from what is installed.

The ordering rule is shared with the compression jobs, so it lives in services.lib.mlkit.onnx_export;
this module adds the environment override and the lookup of what this onnxruntime build offers.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from services.lib.mlkit.onnx_export import PROVIDER_ORDER, choose_providers

__all__ = ["PROVIDER_ORDER", "choose_providers", "select_providers"]

ENV_PROVIDER = "MAAS_INFERENCE_PROVIDER"   # e.g. CPUExecutionProvider to pin one


def select_providers(available: Sequence[str] | None = None, *, prefer: str | None = None) -> list[str]:
    """Providers for a session, best first; ``available`` defaults to this onnxruntime build's."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    return choose_providers(available, prefer=prefer or os.environ.get(ENV_PROVIDER) or None)
