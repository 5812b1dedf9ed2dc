"""Uploading local files and folders into object storage through the gateway, with progress bars."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from services.apps.cli.client import CliError, Client
from services.apps.cli.output import err_console

CHUNK = 1024 * 1024


def files_of(source: Path) -> list[tuple[Path, str]]:
    """(local file, relative name) of a file or of every file under a folder (hidden ones skipped)."""
    if source.is_file():
        return [(source, source.name)]
    if not source.is_dir():
        raise CliError(f"{source} does not exist")
    found = [(p, p.relative_to(source).as_posix()) for p in sorted(source.rglob("*"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)]
    if not found:
        raise CliError(f"{source} holds no files to upload")
    return found


def _chunks(path: Path, progress: Progress, tasks: list[TaskID]) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            for task in tasks:
                progress.advance(task, len(chunk))
            yield chunk


def progress_bar(*, quiet: bool = False) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err_console, disable=quiet, transient=False)


def object_path(dest: str, name: str, *, folder: bool) -> str:
    """A folder's files go under ``dest``; one file goes to ``dest`` itself unless it names a folder
    (a bare bucket or a trailing '/')."""
    if folder or dest.endswith("/") or "/" not in dest.strip("/"):
        return f"{dest.strip('/')}/{name}"
    return dest.strip("/")


def upload(client: Client, source: Path, dest: str, *, quiet: bool = False) -> list[dict]:
    """PUT ``source`` (a file, or a folder's files keeping their relative paths) under ``dest`` (bucket/prefix)."""
    files = files_of(source)
    total = sum(p.stat().st_size for p, _ in files)
    uploaded = []
    with progress_bar(quiet=quiet) as progress:
        overall = progress.add_task(escape(f"{source.name} ({len(files)} files)"), total=total)
        for path, name in files:
            size = path.stat().st_size
            current = progress.add_task(escape(f"  {name}"), total=size)
            target = object_path(dest, name, folder=source.is_dir())
            # Content-Length set: the gateway streams the body into S3 without chunked decoding.
            result = client.call("PUT", f"/api/v1/storage/objects/{quote(target)}",
                                 content=_chunks(path, progress, [current, overall]),
                                 headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                                 timeout=None)
            progress.remove_task(current)
            uploaded.append(result)
    return uploaded
