"""``maas chat``: talk to a service from the terminal, streamed (the playground's path, or /v1 with an API key)."""
from __future__ import annotations

import sys

import typer

from contracts.openai import INTERACTIVE_MAX_TOKENS, interactive_max_tokens
from services.apps.cli.client import CliError
from services.apps.cli.common import client
from services.apps.cli.output import console, err_console, print_error, print_json
from services.apps.cli.services_cmds import find_callable


def chat(
    service: str = typer.Argument(..., help="one of my services or a preset service (id or name)"),
    message: str = typer.Argument(None, help="the question (read from stdin when left out)"),
    system: str = typer.Option(None, "--system", help="system prompt"),
    temperature: float = typer.Option(1.0, "--temperature", min=0, max=2, help="0 ~ 2"),
    top_p: float = typer.Option(1.0, "--top-p", min=0.1, max=1, help="0.1 ~ 1"),
    top_k: int = typer.Option(20, "--top-k", min=1, max=1000, help="1 ~ 1000"),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1,
                                   help=f"longest answer in tokens (default {INTERACTIVE_MAX_TOKENS}, at most half the "
                                        "service's context; the API's own default is 16)"),
    stream: bool = typer.Option(True, "--stream/--no-stream"),
    api_key: str = typer.Option(None, "--api-key", envvar="MAAS_API_KEY",
                                help="call /v1/chat/completions with this API key instead of the playground"),
    as_json: bool = typer.Option(False, "--json", help="print the whole answer as JSON (implies --no-stream)"),
) -> None:
    """Ask a service one question; the answer streams in as it is generated."""
    try:
        _chat(service, message, system, temperature, top_p, top_k, max_tokens, stream and not as_json, api_key,
              as_json)
    except CliError as exc:
        print_error(exc)
        raise typer.Exit(1) from None


def _chat(service, message, system, temperature, top_p, top_k, max_tokens, stream, api_key, as_json) -> None:
    if message is None:
        message = sys.stdin.read().strip()
    if not message:
        raise CliError("nothing to ask: give a message or pipe one in", field="message")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    with client() as c:
        s = find_callable(c, service)
        limit = max_tokens or interactive_max_tokens(s.get("max_model_len"))
        body = {"messages": messages, "temperature": temperature, "top_p": top_p, "top_k": top_k, "stream": stream,
                "max_tokens": limit}
        if api_key:
            path = f"{s['api_base']}/chat/completions"
            headers = {"Authorization": f"Bearer {api_key}"}
            body["model"] = s["call_model"]
            if stream:
                body["stream_options"] = {"include_usage": True}
        else:
            path, headers = "/api/v1/playground/chat", None
            body["service_id"] = s["id"]
        if not stream:
            answer = c.call("POST", path, json=body, headers=headers, timeout=None)
            if as_json:
                print_json(answer)
            else:
                choice = answer["choices"][0]
                console.print(choice["message"]["content"], highlight=False, markup=False)
                _usage(answer.get("usage"))
                _cut(choice.get("finish_reason"), limit)
            return
        usage, finish = None, None
        for event in c.stream_events(path, body, headers=headers):
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                finish = choice.get("finish_reason") or finish
            usage = event.get("usage") or usage
        sys.stdout.write("\n")
        sys.stdout.flush()
        _usage(usage)
        _cut(finish, limit)


def _usage(usage: dict | None) -> None:
    if usage:
        err_console.print(f"[dim]{usage.get('prompt_tokens')} prompt + {usage.get('completion_tokens')} completion "
                          "tokens[/dim]")


def _cut(finish_reason: str | None, limit: int) -> None:
    """Say so when the answer stopped at max_tokens rather than at its end."""
    if finish_reason == "length":
        err_console.print(f"[yellow]the answer stopped at the limit of {limit} tokens; ask for a longer one with "
                          f"--max-tokens[/yellow]", highlight=False)


def register(root: typer.Typer) -> None:
    root.command("chat")(chat)
