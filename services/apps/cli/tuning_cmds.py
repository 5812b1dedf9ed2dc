"""``maas tune``: tuning jobs, with a live progress bar (iteration, lm loss, ETA).

The commands every job kind has (list, show, watch, logs, stop, continue, delete) come from
services.apps.cli.jobs_cmds; this module describes tuning jobs and adds estimate, create, checkpoints and convert.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import MofNCompleteColumn, TextColumn

from services.apps.cli.client import CliError
from services.apps.cli.common import client, command
from services.apps.cli.jobs_cmds import JobKind, LogSeries, WatchBar, add_job_commands, finish, find, source_of, watch
from services.apps.cli.output import (JsonOption, console, emit, err_console, fields, hours_range, output_model,
                                 status_text, table, when)
from services.apps.cli.upload import upload

app = typer.Typer(help="Model tuning: jobs, logs, checkpoints.", no_args_is_help=True)
LOSS_LINE = re.compile(r"iteration\s+(\d+)/\s*(\d+).*?lm loss: ([0-9.eE+-]+)")


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


def iterations(j: dict) -> str:
    progress = j.get("progress") or {}
    return f"{progress.get('iteration', 0)}/{progress.get('total_iterations', '-')}"


def bar_update(job: dict) -> dict:
    """The --watch bar: iterations done of all, the latest loss and the ETA while running."""
    progress = job.get("progress") or {}
    loss = progress.get("lm_loss")
    return {"completed": progress.get("iteration") or 0, "total": progress.get("total_iterations") or None,
            "loss": f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
            "eta": fmt_eta(eta_seconds(job)) if job["status"] == "running" else "-:--"}


def render_job(j: dict) -> None:
    hp, progress, est = j["hyperparameters"], j.get("progress") or {}, j.get("estimate")
    fields([("id", j["id"]), ("status", status_text(j["status"])), ("message", j.get("status_message")),
            ("source", f"{j['source'].get('model_name') or j.get('template_name')}"
                       f"{' V' + str(j['source']['version_number']) if j['source'].get('version_number') else ''}"),
            ("type", j["tune_type"]), ("output model", output_model(j)),
            ("output path", j["output"]["path"]), ("dataset", f"{j['dataset']['path']} ({j['dataset']['format']}, "
                                                              f"{j['dataset']['sample_count']} samples)"),
            ("epochs", hp["epochs"]), ("iterations", hp["iterations"]), ("global batch", hp.get("global_batch_size")),
            ("learning rate", hp["learning_rate"]),
            ("progress", iterations(j)),
            ("lm loss", progress.get("lm_loss")), ("ETA", fmt_eta(eta_seconds(j)) if j["status"] == "running" else "-"),
            ("estimate", hours_range(est['min_hours'], est['max_hours']) if est else None),
            ("created", when(j["created_at"]))], title=j["name"])
    if j.get("checkpoints"):
        render_checkpoints(j["checkpoints"])


def render_checkpoints(items: list[dict]) -> None:
    table(["iteration", "format", "path", "created"],
          [(c["iteration"], c["format"], c["path"], when(c["created_at"])) for c in items], title="Checkpoints")


GlobalBatchOption = typer.Option(
    None, "--global-batch-size", min=1,
    help="samples per iteration (default the template's: 32, 512 for -1K templates); a dataset needs at least "
         "one global batch. Only self-hosting templates (SmolLM2, the custom-size ones) let you choose it: "
         "`maas tune estimate` shows the range")

KIND = JobKind(
    path="tuning-jobs", label="tuning job",
    columns=["id", "name", "status", "source", "type", "progress", "loss", "created"],
    row=lambda j: (j["id"], j["name"], status_text(j["status"]),
                   j["source"].get("model_name") or j.get("template_name"), j["tune_type"], iterations(j),
                   (j.get("progress") or {}).get("lm_loss"), when(j["created_at"])),
    render=render_job, shows="checkpoints", resumes="from its latest checkpoint",
    bar=WatchBar(columns=lambda: [MofNCompleteColumn(), TextColumn("loss [cyan]{task.fields[loss]}"),
                                  TextColumn("ETA {task.fields[eta]}")], update=bar_update),
    series=LogSeries(flag="--loss", help="print (iteration, lm loss) pairs", search="lm loss",
                     parse=lambda lines: [{"iteration": i, "lm_loss": v} for i, v in loss_points(lines)],
                     columns=["iteration", "lm loss"], row=lambda p: (p["iteration"], f"{p['lm_loss']:.6f}"),
                     title="Loss"))
JOBS = KIND.jobs


@command(app)
def estimate(
    model: str = typer.Option(None, "--model", "-m", help="one of my models (id or name)"),
    version: str = typer.Option(None, "--version"),
    template: str = typer.Option(None, "--template", "-t", help="a model-square template with preset weights"),
    tune_type: str = typer.Option("lora", "--type", help="full, lora or pretrain"),
    samples: int = typer.Option(..., "--samples", help="samples in the dataset"),
    epochs: int = typer.Option(1, "--epochs"),
    global_batch: int = GlobalBatchOption,
    flavor: str = typer.Option("cpu.1", "--flavor"),
    nodes: int = typer.Option(1, "--nodes"),
    as_json: bool = JsonOption,
) -> None:
    """Iterations and the duration estimate (tables 6-5, 6-6) before creating a job; also says whether the
    dataset is large enough (at least one global batch of samples)."""
    with client() as c:
        body = {"source": source_of(c, model=model, version=version, template=template), "tune_type": tune_type,
                "sample_count": samples, "epochs": epochs, "flavor": flavor, "node_count": nodes}
        if global_batch:
            body["global_batch_size"] = global_batch
        data = c.post(f"{JOBS}/estimate", body)

    def render(d: dict) -> None:
        est, allowed = d.get("estimate"), d.get("global_batch_size_range")
        fields([("iterations", f"{d['iterations']} = ceil({samples} / {d['global_batch_size']}) × {epochs}"),
                ("global batch", f"{d['global_batch_size']} samples per iteration"
                                 + (f" (--global-batch-size {allowed[0]}~{allowed[1]})" if allowed else " (fixed)")),
                ("duration", hours_range(est['min_hours'], est['max_hours']) if est else d.get("note"))],
               title="Estimate")
        if d.get("problem"):
            err_console.print(f"[yellow]a job would be refused: {escape(d['problem'])}[/yellow]", highlight=False)
    emit(data, as_json=as_json, render=render)


@command(app)
def create(
    name: str = typer.Argument(..., help="1-64 characters: letters, digits, Chinese, '_', '-'"),
    model: str = typer.Option(None, "--model", "-m", help="one of my models (id or name)"),
    version: str = typer.Option(None, "--version", help="version of the model (default: latest)"),
    template: str = typer.Option(None, "--template", "-t", help="a model-square template with preset weights"),
    tune_type: str = typer.Option("lora", "--type", help="full, lora or pretrain"),
    output_name: str = typer.Option(..., "--output-name", "-o", help="name of the tuned model"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="a local .jsonl/.json/.csv/.xlsx file or bucket/path, "
                                "with at least one global batch of samples (32; 512 for -1K templates)"),
    dataset_format: str = typer.Option(None, "--format", help="moss, alpaca or sharegpt (csv/xlsx: converted)"),
    samples: int = typer.Option(None, "--samples", help="samples in the dataset (checked when given)"),
    epochs: int = typer.Option(1, "--epochs"),
    global_batch: int = GlobalBatchOption,
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
        elif dataset.startswith(("/", ".", "~")):   # meant as a local file (not a bucket named 'tmp')
            raise CliError(f"--dataset: no such local file: {dataset}", field="dataset")
        body = {"name": name, "description": description, "source": source, "tune_type": tune_type,
                "output_model_name": output_name, "dataset_path": dataset,
                "hyperparameters": {"epochs": epochs, "learning_rate": learning_rate, "checkpoint_count": checkpoints},
                "flavor": flavor, "node_count": nodes}
        if global_batch:
            body["hyperparameters"]["global_batch_size"] = global_batch
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
                          + (f", estimated {hours_range(est['min_hours'], est['max_hours'])}" if est else ""))
        if follow:
            job = watch(c, KIND, job["id"], quiet=as_json)
    finish(KIND, job, as_json=as_json)


@command(app)
def checkpoints(job: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """A job's checkpoints."""
    with client() as c:
        data = c.get(f"{JOBS}/{find(c, KIND, job)['id']}/checkpoints")
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
        j = find(c, KIND, job)
        body = {"target": "new_model" if new_model else "new_version", "description": description,
                "validate_weights": validate}
        if new_model:
            body["model_name"] = new_model
        data = c.post(f"{JOBS}/{j['id']}/checkpoints/{iteration}/models", body)
    emit(data, as_json=as_json, render=lambda d: console.print(
        f"checkpoint {iteration} → {d.get('model_name') or 'new version'}: {status_text(d['status'])}"))


# After create and friends, so that `maas tune --help` lists them first.
add_job_commands(app, KIND)
