"""Compression job rules without servers: request validation (table 7-3) and the duration estimate
(table 7-4, or scaled from our own measurement)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.compression.estimate import TABLE_7_4, estimate, param_count
from services.compression.models import JobCreate, Strategy
from services.lib.catalog.templates import default_catalog

BASE = {"name": "job", "source": {"model_id": "m"}, "strategy": "smoothquant-w8a8", "output_model_name": "out"}


def _error(**overrides) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate({**BASE, **overrides})
    err = info.value.errors()[0]
    return ".".join(str(p) for p in err["loc"]), err["msg"]


@pytest.mark.parametrize("name", ["压缩作业", "a", "Job_1-x", "x" * 64])
def test_valid_job_names(name):
    assert JobCreate.model_validate({**BASE, "name": name}).name == name


@pytest.mark.parametrize("name", ["job.v1", "1job", "_job", "", "x" * 65, "job name"])
def test_invalid_job_names(name):
    field, message = _error(name=name)
    assert field == "name" and "'-' and '_'" in message


def test_output_model_name_follows_the_model_rule_with_dots():
    assert JobCreate.model_validate({**BASE, "output_model_name": "smol.w8a8"}).output_model_name == "smol.w8a8"


def test_alpha_defaults_and_bounds():
    job = JobCreate.model_validate(BASE)
    assert job.alpha is None and job.strategy is Strategy.smoothquant_w8a8   # stored as 0.5 by the service
    assert JobCreate.model_validate({**BASE, "alpha": 0}).alpha == 0
    assert JobCreate.model_validate({**BASE, "alpha": 1}).alpha == 1
    assert _error(alpha=1.01) == ("alpha", "Value error, the migration strength must be between 0 and 1; got 1.01")
    field, message = _error(alpha=0.5, strategy="awq-w4a16")
    assert field == "alpha" and "smoothquant-w8a8 only" in message


def test_other_ranges():
    assert _error(description="x" * 1001)[0] == "description"
    assert _error(instance_count=9)[0] == "instance_count"
    assert _error(source={"model_id": "m", "template_id": "t"})[0] == "source"
    assert _error(permanent_log={"enabled": True})[0] == "permanent_log"
    assert _error(notification={"enabled": True, "topic_name": "t"})[0] == "notification"
    assert _error(unknown=1)[0] == "unknown"


def test_table_7_4_rows_name_real_templates_and_match_table_7_2():
    catalog = default_catalog()
    for template_id, row in TABLE_7_4.items():
        template = catalog.get(template_id)
        assert template is not None, template_id
        for strategy, minutes in row.items():
            assert (minutes is not None) == template.supports_compression(strategy), (template_id, strategy)


@pytest.mark.parametrize("template_id, strategy, text", [
    ("llama2-7b", Strategy.smoothquant_w8a8, "5~10 minutes"),
    ("qwen2.5-72b", Strategy.smoothquant_w8a8, "40 minutes"),
    ("llama2-13b", Strategy.awq_w4a16, "1 hour"),
    ("qwen2.5-32b", Strategy.awq_w4a16, "2 hours"),
    ("qwen1.5-72b", Strategy.awq_w4a16, "3 hours"),
])
def test_guide_figures(template_id, strategy, text):
    result = estimate(template_id=template_id, strategy=strategy, params_billion=None)
    assert result.text == text and result.basis == "table 7-4"


def test_measured_estimate_scales_with_size():
    small = estimate(template_id="smollm2-135m-instruct", strategy=Strategy.awq_w4a16, params_billion=0.135)
    large = estimate(template_id="llama-custom", strategy=Strategy.awq_w4a16, params_billion=1.0)
    w8a8 = estimate(template_id="smollm2-135m-instruct", strategy=Strategy.smoothquant_w8a8, params_billion=0.135)
    assert small.basis == large.basis == "measured"
    assert small.min_minutes <= small.max_minutes < large.min_minutes
    assert w8a8.max_minutes < small.max_minutes      # AWQ searches, SmoothQuant only measures
    assert estimate(template_id="llama-custom", strategy=Strategy.awq_w4a16, params_billion=None) is None


def test_param_count_of_smollm2_config():
    config = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
              "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True}
    assert abs(param_count(config) - 134_515_008) < 1000   # SmolLM2-135M's parameter count


def test_a_short_measured_estimate_reads_as_words_not_as_less_than_one():
    tiny = estimate(template_id="qwen2-custom", strategy=Strategy.smoothquant_w8a8, params_billion=0.0001)
    assert tiny.max_minutes < 1 and tiny.text == "under a minute"          # not "<1~<1 minutes"
    small = estimate(template_id="qwen2-custom", strategy=Strategy.awq_w4a16, params_billion=0.02)
    assert small.min_minutes < 1 <= small.max_minutes
    assert small.text == f"up to {small.max_minutes:g} minutes"
