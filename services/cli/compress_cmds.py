"""``maas compress``: compression jobs (SmoothQuant-W8A8, AWQ-W4A16) with a live progress bar."""
from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from services.cli.client import CliError, Client, resolve
from services.cli.common import client, command, confirm_delete
from services.cli.models_cmds import find as find_model
from services.cli.output import (JsonOption, WatchEnd, console, emit, err_console, fields, human_bytes, output_model,
                                 status_text, table, watch_status, when)

app = typer.Typer(help="Model compression: SmoothQuant-W8A8 and AWQ-W4A16 jobs.", no_args_is_help=True)
JOBS = "/api/v1/compression-jobs"
FINISHED = ("completed", "failed")


def find(c: Client, ident: str) -> dict:
    return resolve(c, JOBS, ident, what="compression job")


def _source(c: Client, *, model: str | None, version: str | None, template: str | None) -> dict:
    if bool(model) == bool(template):
        raise CliError("give either --model (one of my models) or --template (a model-square template)",
                       field="source")
    if template:
        return {"template_id": template}
    source = {"model_id": find_model(c, model)["id"]}
    if version:
        source["version"] = version
    return source


def watch(c: Client, job_id: str, *, quiet: bool = False, interval: float = 2.0) -> dict:
    """Follow a job until it ends: the worker's fraction done and its current step."""
    job = c.get(f"{JOBS}/{job_id}")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[step]}"), TextColumn("{task.fields[status]}")]
    end = WatchEnd(FINISHED)
    with Progress(*columns, console=err_console, disable=quiet) as bar:
        task = bar.add_task(job["name"], total=1.0, step="", status=job["status"])
        while True:
            progress = job.get("progress") or {}
            bar.update(task, completed=progress.get("fraction") or 0.0, step=escape(str(progress.get("step") or "")),
                       status=watch_status(job))
            if end.reached(job):
                return job
            time.sleep(interval)
            job = c.get(f"{JOBS}/{job_id}")


def render_job(j: dict) -> None:
    m = j.get("metrics") or {}
    est = j.get("estimate") or {}
    fields([("id", j["id"]), ("status", status_text(j["status"])), ("message", j.get("status_message")),
            ("source", j["source"].get("model_name") or j["source"].get("template_id") or j.get("template_id")),
            ("strategy", j["strategy"]), ("migration strength", (j.get("params") or {}).get("alpha")),
            ("output model", output_model(j)), ("output path", j["output"]["path"]),
            ("progress", f"{(j.get('progress') or {}).get('fraction', 0):.0%} {(j.get('progress') or {}).get('step', '')}"),
            ("size", f"{human_bytes(m['size_before_bytes'])} → {human_bytes(m['size_after_bytes'])} (×{m['size_ratio']})"
             if m else None),
            ("perplexity", f"{m['perplexity_before']} → {m['perplexity_after']} (×{m['perplexity_ratio']})" if m else None),
            ("estimate", est.get("text")), ("created", when(j["created_at"]))], title=j["name"])


def _finish(job: dict, *, as_json: bool) -> None:
    emit(job, as_json=as_json, render=render_job)
    if job["status"] == "failed":
        raise typer.Exit(1)


@command(app)
def estimate(model: str = typer.Option(None, "--model", "-m"), version: str = typer.Option(None, "--version"),
             template: str = typer.Option(None, "--template", "-t"),
             strategy: str = typer.Option("smoothquant-w8a8", "--strategy", "-s"), as_json: bool = JsonOption) -> None:
    """How long a compression job takes (table 7-4)."""
    with client() as c:
        data = c.post(f"{JOBS}/estimate", {"source": _source(c, model=model, version=version, template=template),
                                           "strategy": strategy})
    emit(data, as_json=as_json, render=lambda d: console.print(
        (d["estimate"] or {}).get("text") or d.get("note") or "-", highlight=False, markup=False))


@command(app)
def create(
    name: str = typer.Argument(..., help="1-64 characters: letters, digits, Chinese, '_', '-'"),
    model: str = typer.Option(None, "--model", "-m", help="one of my models (id or name)"),
    version: str = typer.Option(None, "--version"),
    template: str = typer.Option(None, "--template", "-t", help="a model-square template with preset weights"),
    strategy: str = typer.Option("smoothquant-w8a8", "--strategy", "-s", help="smoothquant-w8a8 or awq-w4a16"),
    alpha: float = typer.Option(None, "--alpha", help="SmoothQuant migration strength 0~1 (default 0.5)"),
    output_name: str = typer.Option(..., "--output-name", "-o", help="name of the compressed model"),
    calibration: str = typer.Option(None, "--calibration", help="bucket/path of calibration text (default built-in)"),
    output_path: str = typer.Option(None, "--output-path"),
    spec: str = typer.Option(None, "--spec", help="instance spec (see `maas compress specs`)"),
    description: str = typer.Option("", "--description"),
    follow: bool = typer.Option(False, "--watch", help="follow the job until it ends"),
    as_json: bool = JsonOption,
) -> None:
    """Create a compression job; the result is a new, deploy-only model."""
    with client() as c:
        body = {"name": name, "description": description,
                "source": _source(c, model=model, version=version, template=template), "strategy": strategy,
                "output_model_name": output_name}
        for key, value in (("alpha", alpha), ("calibration_dataset", calibration), ("output_path", output_path),
                           ("instance_spec", spec)):
            if value is not None:
                body[key] = value
        job = c.post(JOBS, body)
        if not as_json:
            console.print(f"job [bold]{job['name']}[/bold] ({job['id']}) is {job['status']}"
                          + (f", estimated {escape((job.get('estimate') or {}).get('text', ''))}" if job.get("estimate") else ""))
        if follow:
            job = watch(c, job["id"], quiet=as_json)
    _finish(job, as_json=as_json)


@command(app, "list")
def list_(name: str = typer.Option(None), status: str = typer.Option(None), as_json: bool = JsonOption) -> None:
    """List compression jobs."""
    with client() as c:
        data = c.get(JOBS, name=name, status=status, limit=200)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "status", "strategy", "source", "progress", "created"],
        [(j["id"], j["name"], status_text(j["status"]), j["strategy"],
          j["source"].get("model_name") or j.get("template_id"), f"{(j.get('progress') or {}).get('fraction', 0):.0%}",
          when(j["created_at"])) for j in d["items"]], title="Compression jobs"))


@command(app)
def show(job: str = typer.Argument(..., help="job id or name"), as_json: bool = JsonOption) -> None:
    """A job's settings, progress and size / perplexity before and after."""
    with client() as c:
        j = find(c, job)
    emit(j, as_json=as_json, render=render_job)


@command(app, "watch")
def watch_cmd(job: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """Follow a job with a progress bar until it ends."""
    with client() as c:
        j = watch(c, find(c, job)["id"], quiet=as_json)
    _finish(j, as_json=as_json)


@command(app)
def logs(job: str = typer.Argument(...), search: str = typer.Option(None, "--search", "-s"),
         download: Path = typer.Option(None, "--download"), as_json: bool = JsonOption) -> None:
    """Search, print or download a job's logs."""
    with client() as c:
        j = find(c, job)
        if download:
            download.write_text(str(c.call("GET", f"{JOBS}/{j['id']}/logs/download")))
            console.print(f"wrote {download}")
            return
        data = c.get(f"{JOBS}/{j['id']}/logs", search=search, limit=1000)
    emit(data, as_json=as_json, render=lambda d: [console.print(i["line"], highlight=False, markup=False)
                                                   for i in d["items"]])


@command(app)
def specs(as_json: bool = JsonOption) -> None:
    """Strategies and instance specs of compression jobs."""
    with client() as c:
        data = c.get("/api/v1/compression-strategies")
    emit(data, as_json=as_json, render=lambda d: (
        console.print("strategies: " + ", ".join(d["strategies"])),
        table(["id", "name", "CPUs"], [(s["id"], s["name"], s["cpus"]) for s in d["instance_specs"]],
              title="Instance specs")))


@command(app)
def delete(job: str = typer.Argument(...), yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete a compression job (asks you to type DELETE)."""
    with client() as c:
        j = find(c, job)
        confirm_delete(f"compression job '{j['name']}'", yes=yes)
        c.delete(f"{JOBS}/{j['id']}")
    console.print(f"deleted compression job [bold]{j['name']}[/bold]")
