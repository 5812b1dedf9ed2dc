"""``maas backup DEST`` and ``maas restore SRC``: the embedded data of a `maas up` data folder.

The copy goes through the servers' protocols while the platform runs (services/lib/embedded/backup.py
says in which order and why; docs/operations.md, "Backup and restore", for operators).
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from services.apps.cli.client import CliError
from services.apps.cli.common import handled
from services.apps.cli.output import console, err_console
from services.apps.cli.platform_cmds import _default_data_dir

DATA_DIR_OPTION = typer.Option(None, "--data-dir", help="the data folder of `maas up` (default: the user data dir)")


class _Bars:
    """One bar per phase (Kafka offsets, MongoDB, each bucket, Kafka topics), counted in items."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def phase(self, description: str, total: int | None) -> None:
        self._task = self._progress.add_task(escape(description), total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)


def _bars(quiet: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, disable=quiet)


def _totals(manifest: dict) -> str:
    documents = sum(e["documents"] for collections in manifest["mongo"].values() for e in collections.values())
    collections = sum(len(c) for c in manifest["mongo"].values())
    objects = sum(e["objects"] for e in manifest["objects"].values())
    size = sum(e["bytes"] for e in manifest["objects"].values())
    return (f"{documents} documents in {collections} collections, {objects} objects ({size / 1e6:.1f} MB) "
            f"in {len(manifest['objects'])} buckets")


@handled
def backup(
    dest: Path = typer.Argument(..., help="a new or empty folder for the backup"),
    data_dir: Path = DATA_DIR_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Back up MongoDB, the objects and Kafka (topics and committed offsets) of a data folder, while
    `maas up` runs on it (or not: then its servers are started for the time of the copy)."""
    from services.lib.embedded.backup import BackupError, backup as run_backup, servers_of

    try:
        with servers_of(data_dir or _default_data_dir()) as endpoints, _bars(quiet) as progress:
            manifest = run_backup(endpoints, dest, progress=_Bars(progress))
    except BackupError as exc:
        raise CliError(str(exc)) from None
    console.print(f"backed up {_totals(manifest)} to {escape(str(dest))}", soft_wrap=True)


@handled
def restore(
    source: Path = typer.Argument(..., help="a folder written by `maas backup`"),
    data_dir: Path = DATA_DIR_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Restore a backup into a new or empty data folder; then `maas up --data-dir` starts the platform on it."""
    from services.lib.embedded.backup import BackupError, restore as run_restore

    target = data_dir or _default_data_dir()
    try:
        with _bars(quiet) as progress:
            manifest = run_restore(source, target, progress=_Bars(progress))
    except BackupError as exc:
        raise CliError(str(exc)) from None
    console.print(f"restored {_totals(manifest)} (backup of {manifest['finished_at']}) into {escape(str(target))}; "
                  f"start it with `maas up --data-dir {escape(str(target))}`", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
