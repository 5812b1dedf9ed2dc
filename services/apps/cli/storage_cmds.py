"""``maas storage``: buckets, listing and uploads (weights, datasets)."""
from __future__ import annotations

from pathlib import Path

import typer

from services.apps.cli.common import client, command
from services.apps.cli.output import JsonOption, console, emit, human_bytes, table
from services.apps.cli.upload import upload

app = typer.Typer(help="Object storage: buckets, files, uploads.", no_args_is_help=True)


@command(app)
def buckets(as_json: bool = JsonOption) -> None:
    """Buckets you can write to."""
    with client() as c:
        data = c.get("/api/v1/storage/buckets")
    emit(data, as_json=as_json, render=lambda d: table(["bucket"], [(b["name"],) for b in d["items"]],
                                                       title="Buckets"))


@command(app)
def ls(path: str = typer.Argument(..., help="bucket or bucket/prefix"),
       recursive: bool = typer.Option(False, "--recursive", "-r"), as_json: bool = JsonOption) -> None:
    """List objects and folders under a path."""
    with client() as c:
        data = c.get("/api/v1/storage/objects", path=path, recursive=recursive)
    emit(data, as_json=as_json, render=lambda d: table(
        ["path", "size"], [(o["path"], "folder" if o["is_dir"] else human_bytes(o["size"])) for o in d["items"]],
        title="Objects"))


@command(app, "upload")
def upload_cmd(source: Path = typer.Argument(..., exists=True, help="a local file or folder"),
               dest: str = typer.Argument(None, help="bucket/prefix (default: your bucket/<name of the source>)"),
               as_json: bool = JsonOption) -> None:
    """Upload a file or a folder (keeping relative paths), with progress bars."""
    with client() as c:
        if dest is None:
            dest = f"{c.get('/api/v1/auth/me')['default_bucket']}/{source.name}"
            if source.is_file():
                dest = dest.rsplit("/", 1)[0] + "/"
        results = upload(c, source, dest, quiet=as_json)
    emit({"items": results}, as_json=as_json,
         render=lambda d: console.print(f"uploaded {len(d['items'])} file(s) to [bold]{dest.rstrip('/')}[/bold]"))
