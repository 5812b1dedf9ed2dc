"""``maas deploy``, ``maas services``, ``maas presets``: model services and preset services."""
from __future__ import annotations

import time

import typer
from rich.markup import escape

from services.apps.cli.client import CliError, Client, resolve
from services.apps.cli.common import client, command, confirm_delete, wait_until
from services.apps.cli.models_cmds import find as find_model
from services.apps.cli.output import JsonOption, Markup, console, emit, err_console, fields, status_text, table, when

app = typer.Typer(help="Model services: list, show, start, stop, scale, QPS, upgrade, call.", no_args_is_help=True)
presets_app = typer.Typer(help="Preset services and their free quota.", no_args_is_help=True)
SERVICES = "/api/v1/services"
SETTLED = ("running", "failed", "stopped", "alarm")


def find(c: Client, ident: str) -> dict:
    return resolve(c, SERVICES, ident, what="service")


def find_callable(c: Client, ident: str) -> dict:
    """One of my services or a preset service, by id or name."""
    for item in c.get("/api/v1/preset-services")["items"]:
        if ident in (item["id"], item["name"]):
            return {**item, "preset": True}
    return find(c, ident)


def examples(url: str, service: dict) -> dict[str, str]:
    base = f"{url}{service['api_base']}"
    model = service["call_model"]
    curl = (f"curl -X POST \"{base}/chat/completions\" -H \"Content-Type: application/json\" "
            f"-H \"Authorization: Bearer <your_api_key>\" -d '{{\"model\": \"{model}\", \"max_tokens\": 20, "
            f"\"messages\": [{{\"role\": \"user\", \"content\": \"hello\"}}], \"stream\": false, \"temperature\": 1.0}}'")
    python = (f"from openai import OpenAI\n\nclient = OpenAI(base_url=\"{base}\", api_key=\"<your_api_key>\")\n"
              f"reply = client.chat.completions.create(model=\"{model}\", "
              f"messages=[{{\"role\": \"user\", \"content\": \"hello\"}}])\nprint(reply.choices[0].message.content)")
    return {"base_url": base, "model": model, "curl": curl, "python": python}


def render_service(s: dict) -> None:
    fields([("id", s["id"]), ("status", status_text(s["status"])), ("message", s.get("message")),
            ("model", f"{s['model_name']} V{s['version_number']}"), ("quantization", s.get("quantization") or "none"),
            ("instances", f"{s['ready_instances']}/{s['instance_count']} ready"
                          + (f" (recommended {s['recommended_instance_count']})" if s.get("recommended_instance_count") else "")),
            ("QPS limit", s["qps_limit"]), ("instance spec", s["instance_spec"]),
            ("content moderation", "on" if s["content_moderation"] else "off"),
            ("max length", s["max_model_len"]), ("base URL", s["api_base"]), ("model name", s["call_model"]),
            ("created", when(s["created_at"]))], title=s["name"])


def progress_line(s: dict) -> str:
    """One step of a service's way to running: what it is doing and how many instances are ready."""
    doing = s.get("operation") or s["status"]
    return f"{s['name']}: {doing}, {s['ready_instances']}/{s['instance_count']} instance(s) ready"


def settled(s: dict) -> bool:
    """Deployed, started, scaled or upgraded as far as it goes: a final state and no operation under way."""
    return s["status"] in SETTLED and not s.get("operation")


def wait_settled(c: Client, service_id: str, *, timeout: float, quiet: bool) -> dict:
    """Poll until the service settles; each new step (deploying → instance n/m ready → running) is
    printed on a line of its own, so a wait of many seconds shows where it is, also in a log file."""
    started, shown = time.monotonic(), []

    def fetch() -> dict:
        service = c.get(f"{SERVICES}/{service_id}")
        line = progress_line(service)
        if not quiet and (not shown or shown[-1] != line):
            shown.append(line)
            err_console.print(f"  {line}", highlight=False, markup=False)
        return service

    return wait_until(fetch, settled, message=lambda s: f"{progress_line(s)} ({time.monotonic() - started:.0f} s)…",
                      timeout=timeout, quiet=quiet)


WaitOption = typer.Option(False, "--wait/--no-wait", help="wait until the service settles, showing each step")
TimeoutOption = typer.Option(600, "--timeout", help="seconds to wait")


def deploy(
    model: str = typer.Argument(..., help="one of my models (id or name)"),
    name: str = typer.Option(..., "--name", "-n", help="service name: 1-64 letters, digits, Chinese, '_', '-'"),
    version: str = typer.Option(None, "--version", help="model version (default: latest)"),
    qps: int = typer.Option(1, "--qps", help="QPS limit"),
    instances: int = typer.Option(None, "--instances", help="instance count (default: the recommended count)"),
    spec: str = typer.Option(None, "--spec", help="instance spec (see `maas services specs`)"),
    description: str = typer.Option("", "--description"),
    moderation: bool = typer.Option(True, "--moderation/--no-moderation", help="content moderation"),
    confirm_off: bool = typer.Option(False, "--yes-moderation-off", help="confirm turning content moderation off"),
    auto_stop_hours: float = typer.Option(None, "--auto-stop", help="stop after this many hours of running"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="wait until it runs (or fails)"),
    timeout: float = typer.Option(600, help="seconds to wait"),
    as_json: bool = JsonOption,
) -> None:
    """Deploy a model version as a service."""
    with client() as c:
        m = find_model(c, model)
        if instances is None:
            rec = c.get(f"{SERVICES}/recommendation", qps=qps, model_id=m["id"])
            instances = rec.get("recommended_instance_count") or 1
        body = {"name": name, "description": description, "model_id": m["id"], "qps_limit": qps,
                "instance_count": instances, "content_moderation": moderation,
                "confirm_moderation_off": (not moderation) and confirm_off}
        if version:
            body["version"] = version
        if spec:
            body["instance_spec"] = spec
        if auto_stop_hours:
            body["auto_stop"] = {"enabled": True, "hours": auto_stop_hours}
        s = c.post(SERVICES, body)
        if not as_json:
            console.print(f"service [bold]{s['name']}[/bold] ({s['id']}) is {s['status']} with {instances} instance(s)")
        if wait:
            s = wait_settled(c, s["id"], timeout=timeout, quiet=as_json)
        url = c.url
    emit(s, as_json=as_json, render=lambda s: (console.print(f"service [bold]{s['name']}[/bold]: {status_text(s['status'])}"
                                                            + (f" — {escape(s['message'])}" if s.get("message") else "")),
                                               console.print(f"base URL: {url}{s['api_base']}   model: {s['call_model']}",
                                                             soft_wrap=True, highlight=False)))
    if s["status"] == "failed":
        raise typer.Exit(1)


@command(app, "list")
def list_(name: str = typer.Option(None), status: str = typer.Option(None), as_json: bool = JsonOption) -> None:
    """List my services."""
    with client() as c:
        data = c.get(SERVICES, name=name, status=status, limit=200)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "status", "model", "instances", "QPS", "created"],
        [(s["id"], s["name"], status_text(s["status"]), f"{s['model_name']} V{s['version_number']}",
          f"{s['ready_instances']}/{s['instance_count']}", s["qps_limit"], when(s["created_at"])) for s in d["items"]],
        title="Services"))


@command(app)
def show(service: str = typer.Argument(..., help="service id or name"), as_json: bool = JsonOption) -> None:
    """A service's details and instances."""
    with client() as c:
        s = find(c, service)
    emit(s, as_json=as_json, render=render_service)


@command(app)
def specs(as_json: bool = JsonOption) -> None:
    """Instance specs to deploy on."""
    with client() as c:
        data = c.get(f"{SERVICES}/instance-specs")
    emit(data, as_json=as_json, render=lambda d: table(["id", "name", "CPUs", "memory (GB)"],
                                                       [(s["id"], s["name"], s["cpus"], s["memory_gb"]) for s in d["items"]],
                                                       title="Instance specs"))


@command(app)
def start(service: str = typer.Argument(..., help="service id or name"), wait: bool = WaitOption,
          timeout: float = TimeoutOption, as_json: bool = JsonOption) -> None:
    """Start a stopped or failed service."""
    _change(service, "POST", "/start", None, as_json, wait=wait, timeout=timeout)


@command(app)
def stop(service: str = typer.Argument(..., help="service id or name"), as_json: bool = JsonOption) -> None:
    """Stop a service (drains and stops every instance)."""
    _change(service, "POST", "/stop", None, as_json)


@command(app)
def scale(service: str = typer.Argument(..., help="service id or name"),
          instances: int = typer.Argument(..., help="new instance count (1-16)"), wait: bool = WaitOption,
          timeout: float = TimeoutOption, as_json: bool = JsonOption) -> None:
    """Scale a running service's instance count."""
    _change(service, "PUT", "/instance-count", {"instance_count": instances}, as_json, wait=wait, timeout=timeout)


@command(app)
def qps(service: str = typer.Argument(..., help="service id or name"),
        limit: int = typer.Argument(..., help="new QPS limit"), as_json: bool = JsonOption) -> None:
    """Change a service's QPS limit."""
    _change(service, "PUT", "/qps", {"qps_limit": limit}, as_json)


@command(app)
def upgrade(service: str = typer.Argument(..., help="service id or name"),
            version: str = typer.Argument(..., help="another version of the same model: 2, V2 or id"),
            wait: bool = WaitOption, timeout: float = TimeoutOption, as_json: bool = JsonOption) -> None:
    """Upgrade a service to another version of its model (a running one rolls its instances over)."""
    _change(service, "POST", "/upgrade", {"version": version}, as_json, wait=wait, timeout=timeout)


def _change(ident: str, method: str, suffix: str, body: dict | None, as_json: bool, *, wait: bool = False,
            timeout: float = 600) -> None:
    with client() as c:
        s = find(c, ident)
        result = c.call(method, f"{SERVICES}/{s['id']}{suffix}", **({"json": body} if body is not None else {}))
        if wait:
            result = wait_settled(c, s["id"], timeout=timeout, quiet=as_json)
    if wait and result["status"] == "failed":
        emit(result, as_json=as_json, render=lambda r: console.print(
            f"service [bold]{r['name']}[/bold]: {status_text(r['status'])}"
            + (f" — {escape(r['message'])}" if r.get("message") else "")))
        raise typer.Exit(1)
    emit(result, as_json=as_json, render=lambda r: console.print(
        f"service [bold]{r['name']}[/bold]: {status_text(r['status'])}"
        + (f" ({r['operation']})" if r.get("operation") else "")))


@command(app)
def moderation(service: str = typer.Argument(..., help="service id or name"),
               state: str = typer.Argument(..., help="on or off"),
               yes: bool = typer.Option(False, "--yes", "-y", help="confirm turning moderation off"),
               as_json: bool = JsonOption) -> None:
    """Turn content moderation on or off (off asks for confirmation)."""
    if state not in ("on", "off"):
        raise CliError("state must be 'on' or 'off'", field="state")
    if state == "off" and not yes and not typer.confirm(
            "Without content moderation the service's inputs and outputs are not checked for non-compliant "
            "content. Turn it off?", default=False):
        raise CliError("content moderation stays on")
    _change(service, "PUT", "/moderation", {"enabled": state == "on", "confirm_moderation_off": state == "off"},
            as_json)


@command(app)
def delete(service: str = typer.Argument(..., help="service id or name"),
           yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete a service (asks you to type DELETE)."""
    with client() as c:
        s = find(c, service)
        confirm_delete(f"service '{s['name']}'", yes=yes)
        c.delete(f"{SERVICES}/{s['id']}")
    console.print(f"deleted service [bold]{s['name']}[/bold]")


@command(app)
def events(service: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """A service's events (kept 30 days)."""
    with client() as c:
        data = c.get(f"{SERVICES}/{find(c, service)['id']}/events", limit=200)
    emit(data, as_json=as_json, render=lambda d: table(["time", "kind", "level", "message"],
                                                       [(when(e["at"]), e["kind"], e["level"], e["message"])
                                                        for e in d["items"]], title="Events"))


@command(app)
def logs(service: str = typer.Argument(...), search: str = typer.Option(None, "--search", "-s"),
         limit: int = typer.Option(200), as_json: bool = JsonOption) -> None:
    """A service's instance logs."""
    with client() as c:
        data = c.get(f"{SERVICES}/{find(c, service)['id']}/logs", search=search, limit=limit)
    emit(data, as_json=as_json, render=lambda d: [console.print(f"{when(i['at'])} [{i['instance_id'][:8]}] {i['line']}",
                                                                highlight=False, markup=False) for i in d["items"]])


@command(app)
def metrics(service: str = typer.Argument(...), minutes: int = typer.Option(60), as_json: bool = JsonOption) -> None:
    """Monitoring: requests, errors, tokens, latency of the last minutes."""
    with client() as c:
        data = c.get(f"{SERVICES}/{find(c, service)['id']}/metrics", minutes=minutes)

    def render(d: dict) -> None:
        t = d["totals"]
        fields([("requests", t["requests"]), ("errors", t["errors"]), ("rejected", t["rejected"]),
                ("prompt tokens", t["prompt_tokens"]), ("completion tokens", t["completion_tokens"]),
                ("avg latency (ms)", t["avg_latency_ms"]), ("avg time to first token (ms)", t["avg_ttft_ms"]),
                ("prefix cache hit rate", t.get("prefix_cache_hit_rate"))],
               title=f"Last {minutes} minutes")
        table(["minute", "requests", "errors", "tokens", "latency (ms)"],
              [(when(p["minute"]), p["requests"], p["errors"], p["prompt_tokens"] + p["completion_tokens"],
                p["avg_latency_ms"]) for p in d["series"]], title="Per minute")
    emit(data, as_json=as_json, render=render)


@command(app)
def call(service: str = typer.Argument(..., help="service (or preset service) id or name"),
         as_json: bool = JsonOption) -> None:
    """The base URL, model name and curl / Python examples to call a service."""
    with client() as c:
        s = find_callable(c, service)
        data = examples(c.url, s)
    emit(data, as_json=as_json, render=lambda d: (
        # Plain lines, not a table: a URL folded at the terminal's width cannot be pasted.
        console.print(f"base URL: {d['base_url']}\nmodel:    {d['model']}", highlight=False, markup=False,
                      soft_wrap=True),
        console.print("\n[bold]curl[/bold]"), console.print(d["curl"], highlight=False, markup=False, soft_wrap=True),
        console.print("\n[bold]Python (OpenAI SDK)[/bold]"), console.print(d["python"], highlight=False, markup=False, soft_wrap=True),
        console.print("\n[dim]Create a key with `maas keys create` and put it in place of <your_api_key>.[/dim]")))


@command(presets_app, "list")
def presets_list(as_json: bool = JsonOption) -> None:
    """Preset services with your free quota."""
    with client() as c:
        data = c.get("/api/v1/preset-services")
    emit(data, as_json=as_json, render=_render_presets)


def preset_status(item: dict) -> str:
    """The status cell: a preset still importing its weights shows how far it is."""
    if item["status"] == "importing":
        return Markup(f"[yellow]importing ({int(float(item.get('import_progress') or 0) * 100)}%)[/yellow]")
    if item["status"] == "import_failed":
        return Markup("[red]import failed[/red]")
    return status_text(item["status"])


def _render_presets(data: dict) -> None:
    items = data["items"]
    if not items:
        console.print("No preset services: this platform's model square has no template with weights "
                      "that ship with it.\n[dim]Deploy a model of your own instead: `maas models create`, "
                      "then `maas deploy`.[/dim]", highlight=False)
        return
    table(["id", "name", "model", "status", "quota"],
          [(s["id"], s["name"], s["model_name"], preset_status(s),
            f"{s['quota']['remaining']}/{s['quota']['granted']}" if s["quota"]["claimed"] else "not claimed")
           for s in items], title="Preset services")
    for s in items:
        if s["status"] == "importing":
            console.print(f"[dim]{escape(s['name'])} is importing its weights (first start, about a minute); "
                          "run `maas presets list` again to see it become ready.[/dim]", highlight=False)
        elif s["status"] == "import_failed" and s.get("message"):
            err_console.print(s["message"], highlight=False, markup=False)


@command(presets_app)
def claim(service: str = typer.Argument(None, help="preset service id or name (default: the only preset service)"),
          as_json: bool = JsonOption) -> None:
    """Claim the free quota of a preset service (once per user)."""
    with client() as c:
        s = find_preset(c, service)
        data = c.post(f"/api/v1/preset-services/{s['id']}/claim")
    emit(data, as_json=as_json, render=lambda d: console.print(
        f"claimed {d['granted']:,} free tokens of [bold]{s['name']}[/bold]; call it with "
        f"`maas chat {s['name']} \"Hello!\"`", highlight=False))


def find_preset(c: Client, ident: str | None) -> dict:
    """A preset service by id or name; without one, the only preset service (or the choices)."""
    presets = c.get("/api/v1/preset-services")["items"]
    if ident is None:
        if len(presets) == 1:
            return presets[0]
        if not presets:
            raise CliError("there is no preset service yet",
                           hint="the platform imports the shipped weights on its first start; try again in a minute")
        names = ", ".join(p["name"] for p in presets)
        raise CliError(f"name the preset service to claim: one of {names}", field="service",
                       hint=f"maas presets claim {presets[0]['name']}")
    for item in presets:
        if ident in (item["id"], item["name"]):
            return item
    names = ", ".join(p["name"] for p in presets) or "none yet"
    raise CliError(f"'{ident}' is not a preset service (preset services: {names})", field="service")


def register(root: typer.Typer) -> None:
    command(root, "deploy")(deploy)
    root.add_typer(app, name="services")
    root.add_typer(presets_app, name="presets")
