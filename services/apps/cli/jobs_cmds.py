"""The commands every kind of job has, written once: list, show, watch, logs, stop, continue, delete.

A kind (``maas tune``, ``maas compress``) describes itself with a :class:`JobKind` and calls
:func:`add_job_commands` on its Typer group; its own module keeps only what differs (create, estimate,
checkpoints, strategies…). The API gives every kind the same routes under ``/api/v1/{path}``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn

from services.apps.cli.client import CliError, Client, resolve
from services.apps.cli.common import client, command, confirm_delete
from services.apps.cli.models_cmds import find as find_model
from services.apps.cli.output import (JsonOption, WatchEnd, console, emit, err_console, status_text, table,
                                 watch_status)

# Where a job's run ends: --watch stops polling there (a stopped job waits for `continue`).
FINISHED = ("completed", "failed", "stopped")
# The API's largest page of log lines.
LOG_LIMIT = 5000


@dataclass(frozen=True)
class WatchBar:
    """How ``--watch`` draws a kind's progress between the job's name and its status."""
    columns: Callable[[], list[ProgressColumn]]      # fresh columns per bar: rich columns keep state
    update: Callable[[dict], dict[str, Any]]         # a job → Progress.update's completed, total and fields


@dataclass(frozen=True)
class LogSeries:
    """Numbers a kind reads from its log lines and prints as a table, behind an option of ``logs``
    (tuning: ``--loss`` gives the (iteration, lm loss) pairs)."""
    flag: str
    help: str
    search: str                                      # only the lines holding this text are read
    parse: Callable[[list[str]], list[dict]]
    columns: Sequence[str]
    row: Callable[[dict], Sequence[Any]]
    title: str


@dataclass(frozen=True)
class JobKind:
    """What the shared commands need to know of a job kind; everything else about the job is the API's."""
    path: str                                        # the collection under /api/v1, e.g. "tuning-jobs"
    label: str                                       # what a person calls one, e.g. "tuning job"
    columns: Sequence[str]                           # `list`: the table's columns …
    row: Callable[[dict], Sequence[Any]]             # … and one job's cells
    render: Callable[[dict], None]                   # `show`: one job in full
    bar: WatchBar
    shows: str                                       # `show`'s help: "settings, progress and {shows}"
    resumes: str                                     # `continue`'s help: "continue a stopped job {resumes}"
    outcome: Callable[[dict], None] | None = None    # what a finished create/watch/continue prints (default:
                                                     # one line with the status and its message)
    series: LogSeries | None = None

    @property
    def jobs(self) -> str:
        return f"/api/v1/{self.path}"


def find(c: Client, kind: JobKind, ident: str) -> dict:
    """A job of this kind by id or exact name."""
    return resolve(c, kind.jobs, ident, what=kind.label)


def source_of(c: Client, *, model: str | None, version: str | None, template: str | None) -> dict:
    """A create's ``source``: one of my models (by id or name, optionally a version) or a template."""
    if bool(model) == bool(template):
        raise CliError("give either --model (one of my models) or --template (a model-square template)",
                       field="source")
    if template:
        return {"template_id": template}
    source = {"model_id": find_model(c, model)["id"]}
    if version:
        source["version"] = version
    return source


def watch(c: Client, kind: JobKind, job_id: str, *, quiet: bool = False, interval: float = 2.0) -> dict:
    """Follow a job with the kind's progress bar until it ended and its output model exists."""
    job = c.get(f"{kind.jobs}/{job_id}")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), *kind.bar.columns(),
               TextColumn("{task.fields[status]}")]
    end = WatchEnd(FINISHED)
    with Progress(*columns, console=err_console, disable=quiet) as bar:
        task = bar.add_task(escape(job["name"]), status=watch_status(job), **kind.bar.update(job))
        while True:
            bar.update(task, status=watch_status(job), **kind.bar.update(job))
            if end.reached(job):
                return job
            time.sleep(interval)
            job = c.get(f"{kind.jobs}/{job_id}")


def one_line(job: dict) -> None:
    """A job's name, status and status message."""
    console.print(f"job [bold]{escape(job['name'])}[/bold]: {status_text(job['status'])}"
                  + (f" — {escape(job['status_message'])}" if job.get("status_message") else ""))


def finish(kind: JobKind, job: dict, *, as_json: bool) -> None:
    """Print a job whose create/watch/continue returned; a failed job is exit status 1."""
    emit(job, as_json=as_json, render=kind.outcome or one_line)
    if job["status"] == "failed":
        raise typer.Exit(1)


def print_logs(c: Client, kind: JobKind, ident: str, *, search: str | None, download: Path | None,
               series: bool, as_json: bool) -> None:
    j = find(c, kind, ident)
    if download:
        text = c.call("GET", f"{kind.jobs}/{j['id']}/logs/download")
        download.write_text(text if isinstance(text, str) else str(text or ""), encoding="utf-8")
        console.print(f"wrote {escape(str(download))}")
        return
    if series:
        data = c.get(f"{kind.jobs}/{j['id']}/logs", search=kind.series.search, limit=LOG_LIMIT)
        points = kind.series.parse([item["line"] for item in data["items"]])
        emit(points, as_json=as_json, render=lambda d: table(kind.series.columns, [kind.series.row(p) for p in d],
                                                             title=kind.series.title))
        return
    data = c.get(f"{kind.jobs}/{j['id']}/logs", search=search, limit=LOG_LIMIT)
    emit(data, as_json=as_json, render=lambda d: [console.print(item["line"], highlight=False, markup=False)
                                                   for item in d["items"]])


def add_job_commands(app: typer.Typer, kind: JobKind) -> None:
    """Add list, show, watch, logs, stop, continue and delete for ``kind`` to its group ``app``."""
    plural = f"{kind.label}s"

    @command(app, "list", help=f"List {plural}.")
    def list_(name: str = typer.Option(None, help="exact name"), status: str = typer.Option(None),
              as_json: bool = JsonOption) -> None:
        with client() as c:
            data = c.get(kind.jobs, name=name, status=status, limit=200)
        emit(data, as_json=as_json, render=lambda d: table(kind.columns, [kind.row(j) for j in d["items"]],
                                                           title=plural.capitalize()))

    @command(app, "show", help=f"A {kind.label}'s settings, progress and {kind.shows}.")
    def show(job: str = typer.Argument(..., help="job id or name"), as_json: bool = JsonOption) -> None:
        with client() as c:
            j = find(c, kind, job)
        emit(j, as_json=as_json, render=kind.render)

    @command(app, "watch", help="Follow a job with a progress bar until it ends.")
    def watch_cmd(job: str = typer.Argument(..., help="job id or name"), as_json: bool = JsonOption) -> None:
        with client() as c:
            j = watch(c, kind, find(c, kind, job)["id"], quiet=as_json)
        finish(kind, j, as_json=as_json)

    logs_help = "Search, print or download a job's logs."
    search_option = typer.Option(None, "--search", "-s", help="only lines holding this text, e.g. 'ERROR'")
    download_option = typer.Option(None, "--download", help="write the whole log to this file")
    if kind.series is None:
        @command(app, "logs", help=logs_help)
        def logs(job: str = typer.Argument(..., help="job id or name"), search: str = search_option,
                 download: Path = download_option, as_json: bool = JsonOption) -> None:
            with client() as c:
                print_logs(c, kind, job, search=search, download=download, series=False, as_json=as_json)
    else:
        @command(app, "logs", help=logs_help)
        def logs(job: str = typer.Argument(..., help="job id or name"), search: str = search_option,
                 download: Path = download_option,
                 series: bool = typer.Option(False, kind.series.flag, help=kind.series.help),
                 as_json: bool = JsonOption) -> None:
            with client() as c:
                print_logs(c, kind, job, search=search, download=download, series=series, as_json=as_json)

    @command(app, "stop", help="Stop a job that has not ended yet (`continue` runs it again).")
    def stop(job: str = typer.Argument(..., help="job id or name"), as_json: bool = JsonOption) -> None:
        with client() as c:
            j = c.post(f"{kind.jobs}/{find(c, kind, job)['id']}/stop")
        emit(j, as_json=as_json, render=one_line)

    @command(app, "continue", help=f"Continue a stopped job {kind.resumes}.")
    def continue_(job: str = typer.Argument(..., help="job id or name"),
                  follow: bool = typer.Option(False, "--watch", help="follow the job until it ends"),
                  as_json: bool = JsonOption) -> None:
        with client() as c:
            j = c.post(f"{kind.jobs}/{find(c, kind, job)['id']}/continue")
            if follow:
                j = watch(c, kind, j["id"], quiet=as_json)
        finish(kind, j, as_json=as_json)

    @command(app, "delete", help=f"Delete a {kind.label} (asks you to type DELETE).")
    def delete(job: str = typer.Argument(..., help="job id or name"),
               yes: bool = typer.Option(False, "--yes", "-y", help="do not ask")) -> None:
        with client() as c:
            j = find(c, kind, job)
            confirm_delete(f"{kind.label} '{j['name']}'", yes=yes)
            c.delete(f"{kind.jobs}/{j['id']}")
        console.print(f"deleted {kind.label} [bold]{escape(j['name'])}[/bold]")
