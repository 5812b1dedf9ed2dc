"""Data-parallel training with its ranks on different nodes of a real Ray cluster: the same numbers
as the same ranks run as local processes (same data, same seed), each rank on its own node of the
pool, rank 0's callbacks (logs, checkpoints, the stop question) reaching the caller."""
from __future__ import annotations

import pytest

from services.lib.mlkit.tiny import build_tiny_model
from services.lib.mlkit.training import train
from services.lib.mlkit.training.ray_ranks import RayPlacement
from tests.unit.test_training import Recorder, chat_rows, config

pytestmark = [pytest.mark.integration, pytest.mark.slow]   # a Ray cluster of its own


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("ray-train") / "tiny")


@pytest.fixture(scope="module")
def train_pool(ray_cluster):
    for _ in range(2):
        ray_cluster.add_node("train", cpus=1)
    return "train"


def test_ranks_on_two_nodes_match_two_local_ranks(tiny, tmp_path, ray_cluster, train_pool):
    rows = chat_rows(17)
    local, on_ray = Recorder(), Recorder()
    cfg = dict(epochs=2, lora_dropout=0.1, world_size=2, checkpoint_count=2)
    train(model_dir=tiny, examples=rows, config=config("lora", **cfg), output_dir=tmp_path / "local",
          **local.kwargs())
    result = train(model_dir=tiny, examples=rows, config=config("lora", **cfg), output_dir=tmp_path / "ray",
                   ray_placement=RayPlacement(pool=train_pool), **on_ray.kwargs())
    assert len(result.rank_nodes) == 2 and len(set(result.rank_nodes)) == 2
    assert set(result.rank_nodes) <= ray_cluster.node_ids(train_pool)
    assert [r["iteration"] for r in on_ray.logs] == [r["iteration"] for r in local.logs] == list(range(1, 7))
    assert [r["lm_loss"] for r in on_ray.logs] == pytest.approx([r["lm_loss"] for r in local.logs], abs=1e-4)
    assert [it for it, _ in on_ray.checkpoints] == [it for it, _ in local.checkpoints] == [3, 6]
    assert (result.final_dir / "adapter_model.safetensors").is_file()


def test_a_pool_without_enough_distinct_nodes_is_reported(tiny, tmp_path, train_pool):
    with pytest.raises(RuntimeError, match="has no 3 distinct nodes"):
        train(model_dir=tiny, examples=chat_rows(9), output_dir=tmp_path / "out",
              config=config("lora", world_size=3, global_batch_size=9, dist_timeout_s=10),
              ray_placement=RayPlacement(pool=train_pool))


def test_a_failing_rank_is_reported(tmp_path, train_pool):
    broken = build_tiny_model(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match=r"training rank \d failed on Ray"):
        train(model_dir=broken, examples=chat_rows(8), config=config("full", world_size=2),
              output_dir=tmp_path / "out", ray_placement=RayPlacement(pool=train_pool))
