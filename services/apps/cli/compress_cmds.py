"""``maas compress``: compression jobs (SmoothQuant-W8A8, AWQ-W4A16) with a live progress bar.

The commands every job kind has (list, show, watch, logs, stop, continue, delete) come from
services.apps.cli.jobs_cmds; this module describes compression jobs and adds estimate, create and specs.
"""
from __future__ import annotations

import typer
from rich.markup import escape
from rich.progress import TaskProgressColumn, TextColumn, TimeElapsedColumn

from services.apps.cli.common import client, command
from services.apps.cli.jobs_cmds import JobKind, WatchBar, add_job_commands, finish, source_of, watch
from services.apps.cli.output import JsonOption, console, emit, fields, human_bytes, output_model, status_text, table, when

app = typer.Typer(help="Model compression: SmoothQuant-W8A8 and AWQ-W4A16 jobs.", no_args_is_help=True)


def fraction(j: dict) -> str:
    return f"{(j.get('progress') or {}).get('fraction', 0):.0%}"


def bar_update(job: dict) -> dict:
    """The --watch bar: the worker's fraction done and its current step."""
    progress = job.get("progress") or {}
    return {"completed": progress.get("fraction") or 0.0, "total": 1.0, "step": escape(str(progress.get("step") or ""))}


def render_job(j: dict) -> None:
    m = j.get("metrics") or {}
    est = j.get("estimate") or {}
    fields([("id", j["id"]), ("status", status_text(j["status"])), ("message", j.get("status_message")),
            ("source", j["source"].get("model_name") or j["source"].get("template_id") or j.get("template_id")),
            ("strategy", j["strategy"]), ("migration strength", (j.get("params") or {}).get("alpha")),
            ("output model", output_model(j)), ("output path", j["output"]["path"]),
            ("progress", f"{fraction(j)} {(j.get('progress') or {}).get('step', '')}"),
            ("size", f"{human_bytes(m['size_before_bytes'])} → {human_bytes(m['size_after_bytes'])} (×{m['size_ratio']})"
             if m else None),
            ("perplexity", f"{m['perplexity_before']} → {m['perplexity_after']} (×{m['perplexity_ratio']})" if m else None),
            ("estimate", est.get("text")), ("created", when(j["created_at"]))], title=j["name"])


KIND = JobKind(
    path="compression-jobs", label="compression job",
    columns=["id", "name", "status", "strategy", "source", "progress", "created"],
    row=lambda j: (j["id"], j["name"], status_text(j["status"]), j["strategy"],
                   j["source"].get("model_name") or j.get("template_id"), fraction(j), when(j["created_at"])),
    render=render_job, shows="size / perplexity before and after", resumes="(it runs again from the start)",
    bar=WatchBar(columns=lambda: [TaskProgressColumn(), TimeElapsedColumn(), TextColumn("{task.fields[step]}")],
                 update=bar_update),
    # A finished job is shown in full: its size and perplexity before and after are the result.
    outcome=render_job)
JOBS = KIND.jobs


@command(app)
def estimate(model: str = typer.Option(None, "--model", "-m"), version: str = typer.Option(None, "--version"),
             template: str = typer.Option(None, "--template", "-t"),
             strategy: str = typer.Option("smoothquant-w8a8", "--strategy", "-s"), as_json: bool = JsonOption) -> None:
    """How long a compression job takes (table 7-4)."""
    with client() as c:
        data = c.post(f"{JOBS}/estimate", {"source": source_of(c, model=model, version=version, template=template),
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
                "source": source_of(c, model=model, version=version, template=template), "strategy": strategy,
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
            job = watch(c, KIND, job["id"], quiet=as_json)
    finish(KIND, job, as_json=as_json)


@command(app)
def specs(as_json: bool = JsonOption) -> None:
    """Strategies and instance specs of compression jobs."""
    with client() as c:
        data = c.get("/api/v1/compression-strategies")
    emit(data, as_json=as_json, render=lambda d: (
        console.print("strategies: " + ", ".join(d["strategies"])),
        table(["id", "name", "CPUs"], [(s["id"], s["name"], s["cpus"]) for s in d["instance_specs"]],
              title="Instance specs")))


# After create and friends, so that `maas compress --help` lists them first.
add_job_commands(app, KIND)
