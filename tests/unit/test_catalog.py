"""Model-square catalog: the shipped data matches the guide's tables, and the loader rejects bad files."""
from __future__ import annotations

import textwrap

import pytest

from services.lib.catalog import templates as cat
from services.lib.catalog.templates import (
    Catalog,
    CompressionStrategy,
    Template,
    TuneType,
    default_catalog,
    load_catalog,
)

SQ = CompressionStrategy.smoothquant_w8a8
AWQ = CompressionStrategy.awq_w4a16


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


MINIMAL = """\
- id: {id}
  name: {name}
  series: Test
  series_zh: 测试
  scenarios: [dialogue QA]
  scenarios_zh: [对话问答]
  languages: [en]
  hf_model_types: [llama]
  architectures: [LlamaForCausalLM]
  tasks: {{tune: [lora], compress: [], deploy: true}}
  context_length: 1024
"""


# --- shipped data --------------------------------------------------------------------------------

def test_every_template_validates_and_is_consistent(catalog):
    assert len(catalog) >= 50
    for t in catalog:
        assert isinstance(t, Template)
        # Throughput is only given for tune types the model actually supports (table 6-6 vs 6-1).
        assert set(t.tuning_throughput) <= set(t.tasks.tune), t.id
        for rng in t.tuning_throughput.values():
            assert 0 < rng.low <= rng.high, t.id
        if t.quantization is not None:  # chapter 4: quantized templates are deploy-only
            assert t.tasks.tune == [] and t.tasks.compress == [] and t.tasks.deploy, t.id
        assert t.context_length > 0
        assert t.global_batch_size == (512 if t.name.endswith("-1K") else 32), t.id


def test_guide_model_lists_are_covered(catalog):
    names = {t.name for t in catalog}
    table_6_1 = {
        "Baichuan2-13B", "ChatGLM3-6B", "GLM-4-9B", "Llama2-13B", "Llama2-70B", "Llama2-7B",
        "Llama3-70B", "Llama3-8B", "Qwen-14B", "Qwen-72B", "Qwen-7B", "Qwen1.5-14B", "Qwen1.5-32B",
        "Qwen1.5-72B", "Qwen1.5-7B", "Qwen2-72B", "Qwen2-72B-1K", "Qwen2-7B", "Qwen2-1.5B",
        "Qwen2-0.5B", "Qwen2.5-72B", "Qwen2.5-32B", "Qwen2.5-14B", "Qwen2.5-7B", "Qwen2.5-72B-1K",
        "Qwen2-VL-7B",
    }
    deploy_only = {
        "Baichuan2-7B", "Llama3.1-8B", "Llama3.1-70B", "Yi-6B", "Yi-34B", "Qwen2-72B-32K",
        "Qwen2.5-0.5B", "Qwen2.5-1.5B", "Qwen2.5-72B-32K", "Deepseek-Coder-33B", "DeepSeek-R1",
        "DeepSeek-V3",
    }
    assert table_6_1 <= names
    assert deploy_only <= names
    # Table 6-1 is exhaustive: no guide model outside it may be tunable.
    tunable_guide = {t.name for t in catalog.list(task="tune")} - {
        "SmolLM2-135M-Instruct", "Qwen2 (custom size)", "Llama (custom size)"}
    assert tunable_guide == table_6_1
    for name in deploy_only:
        t = next(t for t in catalog if t.name == name)
        assert t.tasks.tune == [] and t.tasks.compress == [] and t.tasks.deploy


def test_table_6_1_pretrain_only_qwen25_14b(catalog):
    pretrain = [t.name for t in catalog.list(task="pretrain")]
    guide_pretrain = [n for n in pretrain if n not in
                      ("SmolLM2-135M-Instruct", "Qwen2 (custom size)", "Llama (custom size)")]
    assert guide_pretrain == ["Qwen2.5-14B"]
    t = catalog.get("qwen2.5-14b")
    assert t.tuning_throughput[TuneType.pretrain].low == 1120
    assert t.tuning_throughput[TuneType.pretrain].high == 1320
    assert not catalog.get("qwen2.5-7b").supports_tune(TuneType.pretrain)


def test_table_7_2_compression(catalog):
    q72 = catalog.get("qwen2-72b")
    assert q72.supports_compression(SQ)
    assert not q72.supports_compression(AWQ)           # 7-2: Qwen2-72B has no AWQ
    assert catalog.get("qwen2.5-32b").supports_compression(AWQ)
    assert not catalog.get("qwen2-7b").tasks.compress  # tunable, but not in 7-2
    awq = {t.name for t in catalog.list(task="awq-w4a16", quantized=False)}
    assert {"Llama2-7B", "Llama3-70B", "Qwen1.5-72B", "Qwen2.5-32B"} <= awq
    assert not awq & {"Qwen2-72B", "Qwen2-72B-1K", "Qwen2.5-72B", "GLM-4-9B"}


def test_awq_templates_are_deploy_only_but_still_structured(catalog):
    t = catalog.get("qwen2-72b-awq")  # open-source AWQ weights, even though 7-2 cannot produce them
    assert t is not None and t.quantization is AWQ
    assert t.tasks.tune == [] and t.tasks.deploy
    assert not t.supports_compression(SQ)
    assert t.structure == catalog.get("qwen2-72b").structure
    assert catalog.get("llama3-8b-awq").recommended_qps == 3


def test_chapter_8_context_and_qps(catalog):
    assert catalog.get("qwen-14b").context_length == 2048
    assert catalog.get("qwen2-72b-32k").context_length == 32768
    assert catalog.get("qwen2.5-72b-32k").context_length == 32768
    assert catalog.get("qwen2-72b").context_length == 4096
    assert catalog.get("qwen2-0.5b").recommended_qps == 9
    assert catalog.get("qwen2-1.5b").recommended_qps == 6
    assert catalog.get("deepseek-r1-distill-llama-8b").recommended_qps == 3


def test_1k_template_global_batch_and_throughput(catalog):
    t = catalog.get("qwen2-72b-1k")
    assert t.global_batch_size == 512
    assert catalog.get("qwen2-72b").global_batch_size == 32
    assert t.tuning_throughput[TuneType.lora].high == 400


def test_only_the_self_hosting_templates_let_a_job_choose_its_global_batch(catalog):
    choosers = {t.id for t in catalog if t.global_batch_size_range is not None}
    assert choosers == {"smollm2-135m-instruct", "qwen2-custom", "llama-custom"}   # the guide fixes 32 / 512
    assert catalog.get("qwen2-custom").global_batch_size_range == (1, 512)
    template = catalog.get("qwen2-custom").model_dump()
    with pytest.raises(ValueError, match="must hold global_batch_size 32"):
        Template.model_validate({**template, "global_batch_size_range": (1, 16)})


def test_hf_structure_pins(catalog):
    q = catalog.get("qwen2-0.5b")
    assert q.hf_model_types == ["qwen2"] and q.architectures == ["Qwen2ForCausalLM"]
    assert q.structure["hidden_size"] == 896 and q.structure["num_key_value_heads"] == 2
    assert catalog.get("qwen-7b").architectures == ["QWenLMHeadModel"]
    assert catalog.get("chatglm3-6b").architectures == ["ChatGLMModel"]
    assert catalog.get("deepseek-v3").hf_model_types == ["deepseek_v3"]
    assert catalog.get("qwen2-vl-7b").kind == "image-understanding"


def test_self_hosting_templates(catalog):
    s = catalog.get("smollm2-135m-instruct")
    assert s.preset_weights is not None and s.preset_weights.prefix == "smollm2-135m-instruct/"
    assert s.structure["num_key_value_heads"] == 3 and s.context_length == 2048
    assert set(s.tasks.tune) == set(TuneType) and set(s.tasks.compress) == set(CompressionStrategy)
    for tid in ("qwen2-custom", "llama-custom"):
        t = catalog.get(tid)
        assert t.structure is None and t.params_billion is None and t.context_length == 4096
        assert t.supports_tune(TuneType.pretrain) and t.supports_compression(AWQ)


# --- filters -------------------------------------------------------------------------------------

def test_get_unknown_is_none(catalog):
    assert catalog.get("no-such-model") is None


def test_filters(catalog):
    qwen2 = catalog.list(series="Qwen2")
    assert qwen2 and all(t.series == "Qwen2" for t in qwen2)
    assert [t.id for t in catalog.list(series="通义千问2")] == [t.id for t in qwen2]

    chinese = catalog.list(language="zh")
    assert all("zh" in t.languages for t in chinese)
    assert catalog.get("llama2-7b") not in chinese

    quantized = catalog.list(quantized=True)
    assert quantized and all(t.quantization is AWQ for t in quantized)
    assert len(quantized) + len(catalog.list(quantized=False)) == len(catalog)

    assert {t.id for t in catalog.list(search="deepseek-r1")} == {
        "deepseek-r1", "deepseek-r1-distill-qwen-14b", "deepseek-r1-distill-qwen-32b",
        "deepseek-r1-distill-llama-8b"}

    compressible = catalog.list(task="compress")
    assert catalog.get("qwen2-72b") in compressible
    assert catalog.get("qwen2-72b-awq") not in compressible   # quantized: deploy only
    assert catalog.get("glm-4-9b") not in compressible
    assert len(catalog.list(task="deploy")) == len(catalog)

    combined = catalog.list(series="Llama3", task="lora", quantized=False)
    assert [t.id for t in combined] == ["llama3-8b", "llama3-70b"]


def test_unknown_task_rejected(catalog):
    with pytest.raises(ValueError, match="unknown task 'distill'"):
        catalog.list(task="distill")


# --- loader --------------------------------------------------------------------------------------

def test_extra_file_adds_templates(tmp_path):
    path = _write(tmp_path, "extra.yaml", MINIMAL.format(id="my-model", name="My-Model"))
    c = load_catalog([path])
    assert c.get("my-model").name == "My-Model"
    assert len(c) == len(load_catalog()) + 1


def test_duplicate_id_in_extra_file_rejected(tmp_path):
    path = _write(tmp_path, "dup.yaml", MINIMAL.format(id="qwen2-7b", name="Qwen2-7B"))
    with pytest.raises(ValueError) as exc:
        load_catalog([path])
    msg = str(exc.value)
    assert "'qwen2-7b'" in msg and "dup.yaml" in msg and "templates.yaml" in msg


def test_duplicate_within_extra_files_rejected(tmp_path):
    a = _write(tmp_path, "a.yaml", MINIMAL.format(id="mine", name="Mine"))
    b = _write(tmp_path, "b.yaml", MINIMAL.format(id="mine", name="Mine again"))
    with pytest.raises(ValueError, match=r"b\.yaml: duplicate template id 'mine'.*a\.yaml"):
        load_catalog([a, b])


def test_schema_error_names_file_and_template(tmp_path):
    bad = MINIMAL.format(id="ok-one", name="Ok") + MINIMAL.format(id="bad-one", name="Bad").replace(
        "tune: [lora]", "tune: [distill]")
    path = _write(tmp_path, "bad.yaml", bad)
    with pytest.raises(ValueError) as exc:
        load_catalog([path])
    msg = str(exc.value)
    assert "bad.yaml" in msg and "template #1" in msg and "'bad-one'" in msg and "tune" in msg


def test_unknown_field_rejected(tmp_path):
    path = _write(tmp_path, "typo.yaml", MINIMAL.format(id="typo", name="Typo") + "  contxt_length: 5\n")
    with pytest.raises(ValueError, match=r"typo\.yaml: template #0 \(id 'typo'\) is invalid"):
        load_catalog([path])


@pytest.mark.parametrize("text, fragment", [
    ("- id: [unclosed\n", "not valid YAML"),
    ("id: not-a-list\n", "expected a list of templates"),
    ("- just a string\n", "template #0 must be a mapping"),
])
def test_malformed_file_clear_error(tmp_path, text, fragment):
    path = _write(tmp_path, "broken.yaml", text)
    with pytest.raises(ValueError) as exc:
        load_catalog([path])
    assert "broken.yaml" in str(exc.value) and fragment in str(exc.value)


def test_missing_extra_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_catalog([str(tmp_path / "nope.yaml")])


def test_default_catalog_reads_env(tmp_path, monkeypatch):
    a = _write(tmp_path, "a.yaml", MINIMAL.format(id="env-a", name="A"))
    b = _write(tmp_path, "b.yaml", MINIMAL.format(id="env-b", name="B"))
    monkeypatch.setenv(cat.EXTRA_CATALOGS_ENV, f"{a}, {b},")
    default_catalog.cache_clear()
    try:
        c = default_catalog()
        assert c.get("env-a") and c.get("env-b") and c.get("qwen2-7b")
        assert default_catalog() is c  # cached
    finally:
        default_catalog.cache_clear()
