"""``maas tune``: tuning jobs, with a live progress bar (iteration, lm loss, ETA)."""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from services.cli.client import CliError, Client, resolve
from services.cli.common import client, command, confirm_delete
from services.cli.models_cmds import find as find_model
from services.cli.output import (JsonOption, WatchEnd, console, emit, err_console, fields, hours, output_model,
                                 status_text, table, watch_status, when)
from services.cli.upload import upload

app = typer.Typer(help="Model tuning: jobs, logs, checkpoints.", no_args_is_help=True)
JOBS = "/api/v1/tuning-jobs"
FINISHED = ("completed", "failed", "stopped")
LOSS_LINE = re.compile(r"iteration\s+(\d+)/\s*(\d+).*?lm loss: ([0-9.eE+-]+)")


def find(c: Client, ident: str) -> dict:
    return resolve(c, JOBS, ident, what="tuning job")


def eta_seconds(job: dict) -> float | None:
    """Remaining iterations × the latest time per iteration."""
    progress = job.get("progress") or {}
    per = progress.get("elapsed_time_per_iteration_s")
    total, done = progress.get("total_iterations"), progress.get("iteration") or 0
    if not per or not total:
        return None
    return max(0.0, (total - done) * per)


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    seconds = int(math.ceil(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def loss_points(lines: list[str]) -> list[tuple[int, float]]:
    """(iteration, lm loss) of the job's Megatron-style log lines."""
    points = []
    for line in lines:
        match = LOSS_LINE.search(line)
        if match:
            points.append((int(match.group(1)), float(match.group(3))))
    return points


def source_of(c: Client, *, model: str | None, version: str | None, template: str | None) -> dict:
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
    """Follow a job until it finishes: a bar of iterations with the latest loss and the ETA."""
    job = c.get(f"{JOBS}/{job_id}")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss [cyan]{task.fields[loss]}"), TextColumn("ETA {task.fields[eta]}"),
               TextColumn("{task.fields[status]}")]
    end = WatchEnd(FINISHED)
    with Progress(*columns, console=err_console, disable=quiet) as bar:
        total = (job.get("progress") or {}).get("total_iterations") or None
        task = bar.add_task(job["name"], total=total, loss="-", eta="-:--", status=job["status"])
        while True:
            progress = job.get("progress") or {}
            loss = progress.get("lm_loss")
            bar.update(task, completed=progress.get("iteration") or 0, total=progress.get("total_iterations") or total,
                       loss=f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                       eta=fmt_eta(eta_seconds(job)) if job["status"] == "running" else "-:--",
                       status=watch_status(job))
            if end.reached(job):
                return job
            time.sleep(interval)
            job = c.get(f"{JOBS}/{job_id}")


def _finish(job: dict, *, as_json: bool) -> None:
    emit(job, as_json=as_json, render=lambda j: console.print(
        f"job [bold]{j['name']}[/bold]: {status_text(j['status'])}"
        + (f" — {escape(j['status_message'])}" if j.get("status_message") else "")))
    if job["status"] == "failed":
        raise typer.Exit(1)


@command(app)
def estimate(
    model: str = typer.Option(None, "--model", "-m", help="one of my models (id or name)"),
    version: str = typer.Option(None, "--version"),
    template: str = typer.Option(None, "--template", "-t", help="a model-square template with preset weights"),
    tune_type: str = typer.Option("lora", "--type", help="full, lora or pretrain"),
    samples: int = typer.Option(..., "--samples", help="samples in the dataset"),
    epochs: int = typer.Option(1, "--epochs"),
    flavor: str = typer.Option("cpu.1", "--flavor"),
    nodes: int = typer.Option(1, "--nodes"),
    as_json: bool = JsonOption,
) -> None:
    """Iterations and the duration estimate (tables 6-5, 6-6) before creating a job."""
    with client() as c:
        body = {"source": source_of(c, model=model, version=version, template=template), "tune_type": tune_type,
                "sample_count": samples, "epochs": epochs, "flavor": flavor, "node_count": nodes}
        data = c.post(f"{JOBS}/estimate", body)

    def render(d: dict) -> None:
        est = d.get("estimate")
        fields([("iterations", f"{d['iterations']} = ceil({samples} / {d['global_batch_size']}) × {epochs}"),
                ("duration", f"{hours(est['min_hours'])} – {hours(est['max_hours'])}" if est else d.get("note"))],
               title="Estimate")
    emit(data, as_json=as_json, render=render)


@command(app)
def create(
    name: str = typer.Argument(..., help="1-64 characters: letters, digits, Chinese, '_', '-'"),
    model: str = typer.Option(None, "--model", "-m", help="one of my models (id or name)"),
    version: str = typer.Option(None, "--version", help="version of the model (default: latest)"),
    template: str = typer.Option(None, "--template", "-t", help="a model-square template with preset weights"),
    tune_type: str = typer.Option("lora", "--type", help="full, lora or pretrain"),
    output_name: str = typer.Option(..., "--output-name", "-o", help="name of the tuned model"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="a local .jsonl/.json/.csv/.xlsx file or bucket/path"),
    dataset_format: str = typer.Option(None, "--format", help="moss, alpaca or sharegpt (csv/xlsx: converted)"),
    samples: int = typer.Option(None, "--samples", help="samples in the dataset (checked when given)"),
    epochs: int = typer.Option(1, "--epochs"),
    learning_rate: float = typer.Option(2e-5, "--lr", help="(0, 0.1]"),
    checkpoints: int = typer.Option(1, "--checkpoints", help="checkpoints to keep, 1 ~ min(iterations, 10)"),
    flavor: str = typer.Option("cpu.1", "--flavor"),
    nodes: int = typer.Option(1, "--nodes"),
    output_path: str = typer.Option(None, "--output-path", help="bucket/folder for checkpoints and weights"),
    description: str = typer.Option("", "--description"),
    auto_stop_hours: float = typer.Option(None, "--auto-stop", help="stop after this many hours of running"),
    auto_restart: int = typer.Option(None, "--auto-restart", help="restart up to N times on environment errors"),
    follow: bool = typer.Option(False, "--watch", help="follow the job with a progress bar until it ends"),
    as_json: bool = JsonOption,
) -> None:
    """Create a tuning job (a local dataset file is uploaded first)."""
    with client() as c:
        source = source_of(c, model=model, version=version, template=template)
        local = Path(dataset).expanduser()
        if local.is_file():
            bucket = c.get("/api/v1/auth/me")["default_bucket"]
            dataset = f"{bucket}/datasets/{local.name}"
            upload(c, local, dataset, quiet=as_json)
        body = {"name": name, "description": description, "source": source, "tune_type": tune_type,
                "output_model_name": output_name, "dataset_path": dataset,
                "hyperparameters": {"epochs": epochs, "learning_rate": learning_rate, "checkpoint_count": checkpoints},
                "flavor": flavor, "node_count": nodes}
        if dataset_format:
            body["dataset_format"] = dataset_format
        if samples:
            body["sample_count"] = samples
        if output_path:
            body["output_path"] = output_path
        if auto_stop_hours:
            body["auto_stop"] = {"enabled": True, "hours": auto_stop_hours}
        if auto_restart:
            body["auto_restart"] = {"enabled": True, "max_restarts": auto_restart}
        job = c.post(JOBS, body)
        if not as_json:
            hp, est = job["hyperparameters"], job.get("estimate")
            console.print(f"job [bold]{job['name']}[/bold] ({job['id']}): {hp['iterations']} iterations"
                          + (f", estimated {hours(est['min_hours'])} – {hours(est['max_hours'])}" if est else ""))
        if follow:
            job = watch(c, job["id"], quiet=as_json)
    _finish(job, as_json=as_json)


@command(app, "list")
def list_(name: str = typer.Option(None), status: str = typer.Option(None), as_json: bool = JsonOption) -> None:
    """List tuning jobs."""
    with client() as c:
        data = c.get(JOBS, name=name, status=status, limit=200)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "status", "source", "type", "progress", "loss", "created"],
        [(j["id"], j["name"], status_text(j["status"]), j["source"].get("model_name") or j.get("template_name"),
          j["tune_type"], f"{(j.get('progress') or {}).get('iteration', 0)}/{(j.get('progress') or {}).get('total_iterations', '-')}",
          (j.get("progress") or {}).get("lm_loss"), when(j["created_at"])) for j in d["items"]], title="Tuning jobs"))


@command(app)
def show(job: str = typer.Argument(..., help="job id or name"), as_json: bool = JsonOption) -> None:
    """A job's settings, progress and checkpoints."""
    with client() as c:
        j = find(c, job)

    def render(j: dict) -> None:
        hp, progress, est = j["hyperparameters"], j.get("progress") or {}, j.get("estimate")
        fields([("id", j["id"]), ("status", status_text(j["status"])), ("message", j.get("status_message")),
                ("source", f"{j['source'].get('model_name') or j.get('template_name')}"
                           f"{' V' + str(j['source']['version_number']) if j['source'].get('version_number') else ''}"),
                ("type", j["tune_type"]), ("output model", output_model(j)),
                ("output path", j["output"]["path"]), ("dataset", f"{j['dataset']['path']} ({j['dataset']['format']}, "
                                                                  f"{j['dataset']['sample_count']} samples)"),
                ("epochs", hp["epochs"]), ("iterations", hp["iterations"]), ("learning rate", hp["learning_rate"]),
                ("progress", f"{progress.get('iteration', 0)}/{progress.get('total_iterations', '-')}"),
                ("lm loss", progress.get("lm_loss")), ("ETA", fmt_eta(eta_seconds(j)) if j["status"] == "running" else "-"),
                ("estimate", f"{hours(est['min_hours'])} – {hours(est['max_hours'])}" if est else None),
                ("created", when(j["created_at"]))], title=j["name"])
        if j.get("checkpoints"):
            render_checkpoints(j["checkpoints"])
    emit(j, as_json=as_json, render=render)


def render_checkpoints(items: list[dict]) -> None:
    table(["iteration", "format", "path", "created"],
          [(c["iteration"], c["format"], c["path"], when(c["created_at"])) for c in items], title="Checkpoints")


@command(app, "watch")
def watch_cmd(job: str = typer.Argument(..., help="job id or name"), as_json: bool = JsonOption) -> None:
    """Follow a job with a progress bar (iteration, lm loss, ETA) until it ends."""
    with client() as c:
        j = watch(c, find(c, job)["id"], quiet=as_json)
    _finish(j, as_json=as_json)


@command(app)
def logs(job: str = typer.Argument(..., help="job id or name"),
         search: str = typer.Option(None, "--search", "-s", help="e.g. 'lm loss'"),
         download: Path = typer.Option(None, "--download", help="write the whole log to this file"),
         loss: bool = typer.Option(False, "--loss", help="print (iteration, lm loss) pairs"),
         as_json: bool = JsonOption) -> None:
    """Search, print or download a job's logs."""
    with client() as c:
        j = find(c, job)
        if download:
            text = c.call("GET", f"{JOBS}/{j['id']}/logs/download")
            download.write_text(text if isinstance(text, str) else str(text))
            console.print(f"wrote {download}")
            return
        data = c.get(f"{JOBS}/{j['id']}/logs", search="lm loss" if loss else search, limit=5000)
    if loss:
        points = loss_points([item["line"] for item in data["items"]])
        emit([{"iteration": i, "lm_loss": v} for i, v in points], as_json=as_json,
             render=lambda d: table(["iteration", "lm loss"], [(p["iteration"], f"{p['lm_loss']:.6f}") for p in d],
                                    title="Loss"))
        return
    emit(data, as_json=as_json, render=lambda d: [console.print(item["line"], highlight=False, markup=False)
                                                   for item in d["items"]])


@command(app)
def stop(job: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """Stop a creating, waiting or running job (checkpoints are kept)."""
    with client() as c:
        j = c.post(f"{JOBS}/{find(c, job)['id']}/stop")
    emit(j, as_json=as_json, render=lambda j: console.print(f"job [bold]{j['name']}[/bold]: {status_text(j['status'])}"))


@command(app, "continue")
def continue_(job: str = typer.Argument(...), follow: bool = typer.Option(False, "--watch"),
              as_json: bool = JsonOption) -> None:
    """Continue a stopped job from its latest checkpoint."""
    with client() as c:
        j = c.post(f"{JOBS}/{find(c, job)['id']}/continue")
        if follow:
            j = watch(c, j["id"], quiet=as_json)
    _finish(j, as_json=as_json)


@command(app)
def delete(job: str = typer.Argument(...), yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete a job (asks you to type DELETE)."""
    with client() as c:
        j = find(c, job)
        confirm_delete(f"tuning job '{j['name']}'", yes=yes)
        c.delete(f"{JOBS}/{j['id']}")
    console.print(f"deleted tuning job [bold]{j['name']}[/bold]")


@command(app)
def checkpoints(job: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """A job's checkpoints."""
    with client() as c:
        data = c.get(f"{JOBS}/{find(c, job)['id']}/checkpoints")
    emit(data, as_json=as_json, render=lambda d: render_checkpoints(d["items"]))


@command(app)
def convert(
    job: str = typer.Argument(...),
    iteration: int = typer.Argument(..., help="the checkpoint's iteration"),
    new_model: str = typer.Option(None, "--new-model", help="create a new model with this name"),
    new_version: bool = typer.Option(False, "--new-version", help="add a version to the tuned model (completed jobs)"),
    description: str = typer.Option("", "--description"),
    validate: bool = typer.Option(True, "--validate/--no-validate"),
    as_json: bool = JsonOption,
) -> None:
    """Turn a checkpoint into a new model or a new version of the tuned model."""
    if bool(new_model) == new_version:
        raise CliError("give either --new-model NAME or --new-version", field="target")
    with client() as c:
        j = find(c, job)
        body = {"target": "new_model" if new_model else "new_version", "description": description,
                "validate_weights": validate}
        if new_model:
            body["model_name"] = new_model
        data = c.post(f"{JOBS}/{j['id']}/checkpoints/{iteration}/models", body)
    emit(data, as_json=as_json, render=lambda d: console.print(
        f"checkpoint {iteration} → {d.get('model_name') or 'new version'}: {status_text(d['status'])}"))
