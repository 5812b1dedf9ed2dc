"""Execution provider choice: CANN, then CUDA, then CPU, from what the onnxruntime build offers."""
import pytest

from services.lib.inference.providers import select_providers
from services.lib.mlkit.onnx_export import choose_providers

CPU, CUDA, CANN = "CPUExecutionProvider", "CUDAExecutionProvider", "CANNExecutionProvider"


@pytest.mark.parametrize("available, expected", [
    ([CPU], [CPU]),
    (["AzureExecutionProvider", CPU], [CPU]),
    ([CUDA, CPU], [CUDA, CPU]),
    ([CPU, CUDA], [CUDA, CPU]),
    ([CANN, CPU], [CANN, CPU]),
    ([CPU, CUDA, CANN], [CANN, CUDA, CPU]),
    ([], [CPU]),      # CPU is the fallback that every build has
])
def test_best_available_first_and_cpu_last(available, expected):
    assert choose_providers(available) == expected


def test_a_preferred_provider_is_pinned():
    assert choose_providers([CANN, CUDA, CPU], prefer=CPU) == [CPU]
    assert choose_providers([CANN, CUDA, CPU], prefer=CUDA) == [CUDA, CPU]
    with pytest.raises(ValueError, match="CANNExecutionProvider"):
        choose_providers([CUDA, CPU], prefer=CANN)


def test_environment_pin_and_this_build(monkeypatch):
    monkeypatch.setenv("MAAS_INFERENCE_PROVIDER", CPU)
    assert select_providers([CUDA, CPU]) == [CPU]
    monkeypatch.delenv("MAAS_INFERENCE_PROVIDER")
    assert select_providers()[-1] == CPU
