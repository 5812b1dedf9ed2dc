"""``maas models``: my models, their versions and task records."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from services.apps.cli.client import CliError, Client, resolve
from services.apps.cli.common import client, command, confirm_delete, wait_until
from services.apps.cli.output import JsonOption, console, emit, fields, status_text, table, when
from services.apps.cli.upload import upload

app = typer.Typer(help="My models: create from weights, list, show, versions, delete.", no_args_is_help=True)
MODELS = "/api/v1/models"


def check_new_name(name: str) -> None:
    """The guide's name rule, checked before uploading anything (the API checks it again)."""
    from services.lib.common.validation import _NAME, NAME_RULE

    if not _NAME.fullmatch(name):
        raise CliError(f"name: {NAME_RULE}", code="invalid_parameter", field="name")


def find(c: Client, ident: str) -> dict:
    return resolve(c, MODELS, ident, what="model")


def weights_path(c: Client, weights: str, *, label: str, quiet: bool) -> str:
    """A local folder is uploaded into the default bucket first; anything else is a bucket/path already.

    A path that starts with '/', '.' or '~' is always meant as a local folder: when it does not exist
    the error says so, instead of the API's word about a bucket named after its first part ('tmp').
    """
    local = Path(weights).expanduser()
    if local.exists():
        bucket = c.get("/api/v1/auth/me")["default_bucket"]
        dest = f"{bucket}/uploads/{label}-{time.strftime('%Y%m%d%H%M%S')}"
        upload(c, local, dest, quiet=quiet)
        return dest
    if weights.startswith(("/", ".", "~")):
        raise CliError(f"--weights: no such local folder: {weights}", field="weights",
                       hint="give the path of a Hugging Face model folder on this machine, or bucket/folder in storage")
    if "/" not in weights.strip("/") and not weights.startswith("s3://"):
        raise CliError(f"--weights: '{weights}' is neither a local folder nor a bucket/folder path", field="weights")
    return weights


def _bucket_of(weights: str) -> str:
    return weights.removeprefix("s3://").strip("/").split("/", 1)[0]


def post_weights(c: Client, path: str, body: dict, *, typed: str | None) -> dict:
    """POST a body naming weights in storage. ``typed`` is what the user gave as --weights: when the API
    refuses it (it was not a local folder either), the error says both, e.g. "no local folder and no
    bucket named …", instead of only the API's word about a bucket."""
    try:
        return c.post(path, body)
    except CliError as exc:
        if typed is None or body.get("weights_path") != typed or exc.status != 400 or exc.field != "weights_path":
            raise
        bucket = _bucket_of(typed)
        try:
            c.get("/api/v1/storage/objects", path=bucket)   # 400 when the account has no such bucket
        except CliError as listing:
            if listing.status != 400:
                raise exc from None
            raise CliError(f"--weights: there is no local folder '{typed}' and no bucket named '{bucket}'",
                           field="weights", hint="see your buckets with `maas storage buckets`") from None
        exc.hint = exc.hint or f"there is no local folder '{typed}' either"
        raise


def _failure_detail(c: Client, model: dict) -> list[str]:
    lines = []
    for version in model.get("versions") or []:
        if version["status"] != "failed":
            continue
        detail = c.get(f"{MODELS}/{model['id']}/versions/{version['number']}")
        lines.append(f"{version['name']}: {detail.get('message') or 'failed'}")
        for task in detail.get("tasks") or []:
            for check in task.get("checks") or []:
                if not check.get("passed", True):
                    lines.append(f"  ✗ {check.get('name', '')}: {check.get('message', '')}")
    return lines


def wait_created(c: Client, model_id: str, *, timeout: float, quiet: bool) -> dict:
    model = wait_until(lambda: c.get(f"{MODELS}/{model_id}"), lambda m: m["status"] != "creating",
                       message=lambda m: f"checking and importing the weights of {m['name']} ({m['status']})…",
                       timeout=timeout, quiet=quiet)
    if model["status"] == "failed":
        detail = "; ".join(_failure_detail(c, model)) or "weight import failed"
        raise CliError(f"model '{model['name']}' failed: {detail}")
    return model


def render_model(m: dict) -> None:
    fields([("id", m["id"]), ("name", m["name"]), ("status", status_text(m["status"])),
            ("template", f"{m['template_name']} ({m['template_id']})"),
            ("quantization", m.get("quantization") or "none"), ("description", m.get("description")),
            ("versions", m["version_count"]), ("created", when(m["created_at"]))], title=m["name"])
    if m.get("versions"):
        render_versions(m["versions"])


def render_versions(versions: list[dict]) -> None:
    table(["version", "status", "message", "weights", "created"],
          [(v["name"], status_text(v["status"]), v.get("message"), v.get("storage_uri") or v.get("source_uri"),
            when(v["created_at"])) for v in versions], title="Versions")


@command(app, "list")
def list_(name: str = typer.Option(None, help="part of the name"), status: str = typer.Option(None),
          as_json: bool = JsonOption) -> None:
    """List my models."""
    with client() as c:
        data = c.get(MODELS, name=name, status=status, limit=200)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "status", "template", "versions", "quantization", "created"],
        [(m["id"], m["name"], status_text(m["status"]), m["template_name"], m["version_count"],
          m.get("quantization") or "-", when(m["created_at"])) for m in d["items"]], title="Models"))


@command(app)
def show(model: str = typer.Argument(..., help="model id or name"), as_json: bool = JsonOption) -> None:
    """A model with its versions."""
    with client() as c:
        m = find(c, model)
    emit(m, as_json=as_json, render=render_model)


@command(app)
def create(
    name: str = typer.Argument(..., help="1-64 characters: letters, digits, Chinese, '_', '-', '.'"),
    template: str = typer.Option(..., "--template", "-t", help="model-square template id (maas templates list)"),
    weights: str = typer.Option(None, "--weights", "-w",
                                help="a local HF folder (uploaded with progress) or bucket/folder in storage"),
    preset: bool = typer.Option(False, "--preset", help="use the template's shipped weights"),
    description: str = typer.Option("", "--description", "-d", help="up to 100 characters"),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="weight validation (table 5-4)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="wait until the model is created or failed"),
    timeout: float = typer.Option(600, help="seconds to wait"),
    as_json: bool = JsonOption,
) -> None:
    """Create a model from a template and weights (uploading a local folder first)."""
    if preset == bool(weights):
        raise CliError("give either --weights (a local folder or bucket/folder) or --preset", field="weights")
    check_new_name(name)
    with client() as c:
        # Before a possibly long upload: the name must be free.
        if any(m["name"] == name for m in c.get(MODELS, name=name, limit=200)["items"]):
            raise CliError(f"name: a model named '{name}' already exists", status=409, code="conflict", field="name")
        body = {"name": name, "template_id": template, "description": description, "validate_weights": validate}
        if preset:
            body["weights_source"] = "preset"
        else:
            body["weights_path"] = weights_path(c, weights, label=name, quiet=as_json)
        model = post_weights(c, MODELS, body, typed=None if preset else weights)
        if not as_json:
            console.print(f"model [bold]{model['name']}[/bold] ({model['id']}) is {model['status']}")
        if wait:
            model = wait_created(c, model["id"], timeout=timeout, quiet=as_json)
    emit(model, as_json=as_json, render=lambda m: console.print(
        f"model [bold]{m['name']}[/bold]: {status_text(m['status'])}"))


@command(app)
def delete(model: str = typer.Argument(..., help="model id or name"),
           yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for DELETE")) -> None:
    """Delete a model no task uses (asks you to type DELETE)."""
    with client() as c:
        m = find(c, model)
        confirm_delete(f"model '{m['name']}'", yes=yes)
        c.delete(f"{MODELS}/{m['id']}")
    console.print(f"deleted model [bold]{m['name']}[/bold]")


@command(app)
def versions(model: str = typer.Argument(..., help="model id or name"), as_json: bool = JsonOption) -> None:
    """A model's versions."""
    with client() as c:
        m = find(c, model)
    emit({"items": m.get("versions") or []}, as_json=as_json, render=lambda d: render_versions(d["items"]))


@command(app)
def version(model: str = typer.Argument(..., help="model id or name"),
            number: str = typer.Argument(..., help="version: 2, V2 or its id"), as_json: bool = JsonOption) -> None:
    """One version with its task records (weight validation, tuning, deployments…)."""
    with client() as c:
        m = find(c, model)
        v = c.get(f"{MODELS}/{m['id']}/versions/{number}")

    def render(v: dict) -> None:
        fields([("version", v["name"]), ("id", v["id"]), ("status", status_text(v["status"])),
                ("message", v.get("message")), ("description", v.get("description")),
                ("source", v["source_uri"]), ("weights", v.get("storage_uri")),
                ("base version", f"V{v['base_version']}" if v.get("base_version") else None),
                ("created", when(v["created_at"]))], title=f"{m['name']} {v['name']}")
        table(["task", "kind", "status", "message", "updated"],
              [(t["name"], t["kind"], status_text(t["status"]), t.get("message"), when(t["updated_at"]))
               for t in v.get("tasks") or []], title="Task records")
    emit(v, as_json=as_json, render=render)


@command(app, "add-version")
def add_version(
    model: str = typer.Argument(..., help="model id or name"),
    weights: str = typer.Option(..., "--weights", "-w", help="a local HF folder or bucket/folder"),
    description: str = typer.Option("", "--description", "-d"),
    base_version: int = typer.Option(None, "--base-version", help="the version it derives from (default: latest)"),
    validate: bool = typer.Option(True, "--validate/--no-validate"),
    wait: bool = typer.Option(True, "--wait/--no-wait"),
    timeout: float = typer.Option(600),
    as_json: bool = JsonOption,
) -> None:
    """Add a version (numbered automatically, at most 10 per model)."""
    with client() as c:
        m = find(c, model)
        body = {"weights_path": weights_path(c, weights, label=m["name"], quiet=as_json), "description": description,
                "validate_weights": validate}
        if base_version is not None:
            body["base_version"] = base_version
        v = post_weights(c, f"{MODELS}/{m['id']}/versions", body, typed=weights)
        if wait:
            v = wait_until(lambda: c.get(f"{MODELS}/{m['id']}/versions/{v['number']}"),
                           lambda x: x["status"] != "creating",
                           message=lambda x: f"checking the weights of {m['name']} {x['name']}…", timeout=timeout,
                           quiet=as_json)
            if v["status"] == "failed":
                raise CliError(f"{m['name']} {v['name']} failed: {v.get('message')}")
    emit(v, as_json=as_json, render=lambda x: console.print(
        f"{m['name']} [bold]{x['name']}[/bold]: {status_text(x['status'])}"))
