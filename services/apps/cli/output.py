"""How commands print: rich tables for people, plain JSON (``--json``) for scripts, errors on stderr."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.apps.cli.client import CliError

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="print the API's JSON answer (for scripts)")

STATUS_STYLES = {
    "created": "green", "completed": "green", "running": "green", "succeeded": "green", "ready": "green",
    "confirmed": "green", "delivered": "green",
    "creating": "yellow", "waiting": "yellow", "deploying": "yellow", "pending": "yellow", "stopping": "yellow",
    "alarm": "yellow", "unconfirmed": "yellow",
    "failed": "red", "dead": "red",
    "stopped": "dim",
}


def print_json(data: Any) -> None:
    # Plain stdout, not rich: no wrapping or markup in what a script parses.
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def emit(data: Any, *, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        print_json(data)
    else:
        render(data)


class Markup(str):
    """Rich markup we wrote ourselves; every other string from the API is printed literally."""


def status_text(status: str | None) -> str:
    if not status:
        return "-"
    style = STATUS_STYLES.get(str(status), "")
    return Markup(f"[{style}]{escape(str(status))}[/{style}]" if style else escape(str(status)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, Markup) else escape(str(value))


def when(value: Any) -> str:
    """An ISO timestamp as local 'YYYY-MM-DD HH:MM:SS'."""
    if not value:
        return "-"
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def amount(value: float | None) -> str:
    """A count of CPUs, accelerators or hours without trailing zeros: 2, 0.5, 1.234."""
    return "-" if value is None else f"{round(float(value), 3):g}"


def table(columns: Iterable[str], rows: Iterable[Iterable[Any]], *, title: str | None = None) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
        count += 1
    if count:
        console.print(t)
    else:
        console.print(f"[dim]no {title.lower() if title else 'items'}[/dim]")


def fields(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """A two-column key/value view of one resource."""
    t = Table(title=title, show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(overflow="fold")
    for key, value in pairs:
        t.add_row(key, "-" if value == "" else _cell(value))
    console.print(t)


def print_error(exc: CliError) -> None:
    # API text is printed literally: '[alpaca.output]' is a rule name, not rich markup.
    where = f" (HTTP {exc.status}{', ' + exc.code if exc.code else ''})" if exc.status else ""
    err_console.print(f"[bold red]Error{escape(where)}:[/bold red] {escape(exc.message)}", highlight=False)
    if exc.field:
        err_console.print(f"  field: [bold]{escape(exc.field)}[/bold]", highlight=False)
    for detail in exc.details[:20]:
        if "line" in detail:
            rule = f" [{detail['rule']}]" if detail.get("rule") else ""
            err_console.print(escape(f"  line {detail['line']}: {detail.get('message', '')}{rule}"), highlight=False)
        else:
            err_console.print(escape(f"  {detail.get('field', '')}: {detail.get('message', detail)}"), highlight=False)
    if len(exc.details) > 20:
        err_console.print(f"  … and {len(exc.details) - 20} more", highlight=False)
    if exc.hint:
        err_console.print(escape(f"  hint: {exc.hint}"), highlight=False)


# A completed job's output model is made by the registry two events later: --watch waits this long for it.
REGISTRATION_WAIT_S = 120.0


def registering(job: dict) -> bool:
    """A tuning or compression job that completed but whose output model the registry has not made yet."""
    out = job["output"]
    return job.get("status") == "completed" and not out.get("model_id") and not out.get("error")


def watch_status(job: dict) -> str:
    """A job's status for a --watch progress bar."""
    return status_text(job["status"]) + (" registering the model…" if registering(job) else "")


class WatchEnd:
    """When --watch may stop: the job finished and, if it completed, its output model exists (or the
    registry did not make it within REGISTRATION_WAIT_S). Until then the next command could not
    deploy or tune the model by name."""

    def __init__(self, finished: tuple[str, ...]):
        self.finished, self.ended_at = finished, None

    def reached(self, job: dict) -> bool:
        if job["status"] not in self.finished:
            return False
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        return not registering(job) or time.monotonic() - self.ended_at > REGISTRATION_WAIT_S


def output_model(job: dict) -> str:
    """A tuning or compression job's output model: its id once registered, 'registering…' until then."""
    out = job["output"]
    if out.get("model_id"):
        return f"{out['model_name']} ({out['model_id']})"
    if out.get("error"):
        return f"{out['model_name']} (not registered: {out['error']})"
    return f"{out['model_name']} (registering…)" if registering(job) else out["model_name"]


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def hours(value: float | None) -> str:
    if value is None:
        return "-"
    minutes = value * 60
    if minutes < 1:
        return "under a minute"
    return f"{minutes:.0f} min" if minutes < 90 else f"{value:.2f} h"


def hours_range(low: float | None, high: float | None) -> str:
    """An estimate's range: "10 min – 1.50 h", "up to 5 min", "under a minute" (never "<1~<1")."""
    low_text, high_text = hours(low), hours(high)
    if low_text == high_text:
        return high_text
    if low_text == "under a minute":
        return f"up to {high_text}"
    return f"{low_text} – {high_text}"
