"""What each instance spec (实例规格) and training flavor takes from a resource pool: the one table
the serving API, the deployer, compression and tuning read (the deployer may not import serving).

An inference instance of a spec takes its vCPUs (the engine's threads) and its memory; a
compression job takes its spec's vCPUs and memory as one process; each training rank (one per
node) takes one CPU or its flavor's cards, and ``RANK_MEMORY_GB`` of the node's memory.
"""
from __future__ import annotations

from dataclasses import dataclass

from services.lib.common.cluster import Resources

GIB = 2**30


@dataclass(frozen=True)
class ComputeSpec:
    id: str
    name: str
    cpus: int
    memory_gb: int

    @property
    def resources(self) -> Resources:
        return Resources(cpus=float(self.cpus), memory_bytes=self.memory_gb * GIB)


def _table(*specs: ComputeSpec) -> dict[str, ComputeSpec]:
    return {s.id: s for s in specs}


INFERENCE_SPECS: dict[str, ComputeSpec] = _table(
    ComputeSpec("cpu.1u4g", "CPU 1 vCPU | 4 GiB", 1, 4),
    ComputeSpec("cpu.2u8g", "CPU 2 vCPUs | 8 GiB", 2, 8),
    ComputeSpec("cpu.4u16g", "CPU 4 vCPUs | 16 GiB", 4, 16),
)
DEFAULT_INFERENCE_SPEC = "cpu.1u4g"

COMPRESSION_SPECS: dict[str, ComputeSpec] = _table(
    ComputeSpec("cpu.2u8g", "CPU 2 vCPUs | 8 GiB", 2, 8),
    ComputeSpec("cpu.4u16g", "CPU 4 vCPUs | 16 GiB", 4, 16),
    ComputeSpec("cpu.8u32g", "CPU 8 vCPUs | 32 GiB", 8, 32),
)

# The tuning flavors name cards, not host memory: each rank reserves what the smallest instance
# spec gives one vCPU (the training process, its data loader and a checkpoint being written).
RANK_MEMORY_GB = 4


def inference_spec(spec_id: str) -> ComputeSpec:
    """The spec of an instance; an unknown one (a misconfigured preset) is the default spec."""
    return INFERENCE_SPECS.get(spec_id) or INFERENCE_SPECS[DEFAULT_INFERENCE_SPEC]


def instance_resources(spec_id: str) -> Resources:
    """What one inference instance of ``spec_id`` takes from its pool."""
    return inference_spec(spec_id).resources


def rank_resources(*, cards: int, accelerated: bool) -> Resources:
    """What one training rank takes from its node: its cards (or one CPU) and RANK_MEMORY_GB."""
    return Resources(cpus=1.0, gpus=float(cards) if accelerated else 0.0, memory_bytes=RANK_MEMORY_GB * GIB)
