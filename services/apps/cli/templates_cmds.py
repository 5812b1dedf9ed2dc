"""``maas templates``: the model square."""
from __future__ import annotations

import typer

from services.apps.cli.common import client, command
from services.apps.cli.output import JsonOption, console, emit, fields, table

app = typer.Typer(help="Model square: base-model templates.", no_args_is_help=True)


def tasks_text(template: dict) -> str:
    tasks = template.get("tasks") or {}
    parts = []
    if tasks.get("tune"):
        parts.append("tune: " + ",".join(tasks["tune"]))
    if tasks.get("compress"):
        parts.append("compress: " + ",".join(tasks["compress"]))
    if tasks.get("deploy"):
        parts.append("deploy")
    return "; ".join(parts) or "-"


@command(app, "list")
def list_(
    task: str = typer.Option(None, help="tune, compress, deploy, or a tune type / strategy (lora, awq-w4a16…)"),
    series: str = typer.Option(None, help="model series, e.g. Qwen2"),
    language: str = typer.Option(None, help="zh or en"),
    search: str = typer.Option(None, help="text to look for in names and scenarios"),
    as_json: bool = JsonOption,
) -> None:
    """List the model square's templates."""
    with client() as c:
        data = c.get("/api/v1/templates", task=task, series=series, language=language, search=search)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "series", "tasks", "languages", "context", "QPS/instance"],
        [(t["id"], t["name"], t["series"], tasks_text(t), ",".join(t["languages"]), t["context_length"],
          t.get("recommended_qps")) for t in d["items"]], title="Templates"))


@command(app)
def show(template_id: str = typer.Argument(..., help="template id, e.g. qwen2-7b"), as_json: bool = JsonOption) -> None:
    """A template's details: supported tasks, languages, context length, throughput."""
    with client() as c:
        t = c.get(f"/api/v1/templates/{template_id}")

    def render(t: dict) -> None:
        preset = t.get("preset_weights")
        fields([("id", t["id"]), ("name", t["name"]), ("series", f"{t['series']} ({t['series_zh']})"),
                ("kind", t["kind"]), ("scenarios", ", ".join(t["scenarios"])),
                ("languages", ", ".join(t["languages"])), ("parameters", f"{t['params_billion']} B"
                                                            if t.get("params_billion") else "any size"),
                ("quantization", t.get("quantization") or "none"),
                ("tune", ", ".join(t["tasks"]["tune"]) or "not supported"),
                ("compress", ", ".join(t["tasks"]["compress"]) or "not supported"),
                ("deploy", "yes" if t["tasks"]["deploy"] else "no"), ("context length", t["context_length"]),
                ("QPS per instance", t.get("recommended_qps")),
                ("preset weights", f"{preset['state'].get('status')}" if preset else "none"),
                ("description", t.get("description"))], title=t["name"])
    emit(t, as_json=as_json, render=render)
    if not as_json and not t["tasks"]["tune"] and not t["tasks"]["compress"]:
        console.print("[dim]This template can only be deployed.[/dim]")
