"""What serving needs to know about model-square templates: deployability, context length, QPS.

The catalog is read-only data loaded from YAML (no registry state), so it is read in place here;
this adapter is the one spot that knows where it lives.
"""
from __future__ import annotations

from dataclasses import dataclass

from services.lib.catalog.templates import default_catalog


@dataclass(frozen=True)
class TemplateInfo:
    id: str
    name: str
    deployable: bool
    context_length: int              # guide 8: the preset max input+output length
    recommended_qps: float | None    # table 8-2: single-instance QPS
    preset_bucket: str | None = None
    preset_prefix: str | None = None


def template_info(template_id: str) -> TemplateInfo | None:
    t = default_catalog().get(template_id)
    if t is None:
        return None
    preset = t.preset_weights
    return TemplateInfo(id=t.id, name=t.name, deployable=t.tasks.deploy, context_length=t.context_length,
                        recommended_qps=t.recommended_qps, preset_bucket=preset.bucket if preset else None,
                        preset_prefix=preset.prefix if preset else None)


def preset_templates() -> list[TemplateInfo]:
    """Templates whose weights ship with the platform: each becomes a ready-to-call preset service."""
    return [info for t in default_catalog() if t.preset_weights is not None and t.tasks.deploy
            for info in [template_info(t.id)] if info is not None]
