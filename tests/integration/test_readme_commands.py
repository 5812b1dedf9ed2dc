"""The README's commands, as a new user copies them (issue 20): every fenced block of README.md is
covered by one of the rules below, and a block no rule recognises fails the test (a new block needs a
rule). The platform is the session's (``running_platform``); no second one is started.

Rules, per kind of command:

- **Install/start/test** (``scripts/up``, ``scripts/test``): not run (they would install, start a second
  platform or recurse into the suite). Each script exists and is executable, and the flags the README
  gives them (``scripts/up --data-dir``, which passes its arguments to ``maas up``) and ``maas up``
  (``--ray``, ``--log-level``) are accepted by the real ``maas up --help``.
- **External servers** (``export MAAS_...``, ``maas bootstrap-admin``, ``maas serve``): not run (they
  need a Kafka/MongoDB/MinIO of their own). Every exported variable is a setting, every ``maas`` line
  parses with the real command definitions, every service named exists and, with the ones the block's
  comment names, they are all the platform's services.
- **``maas`` CLI block**: every line parses (real command definitions, no request made). Then the
  lines run for real with the checkout's ``maas`` (next to this interpreter), HOME a temp folder, in a
  folder holding ``./my-hf-folder`` (a tiny Qwen2): ``login`` (the platform URL in ``MAAS_URL`` for that
  command only, so later commands use what login stored; a fresh user of the session instead of
  ``admin``, whose API-key slots other tests use; password on stdin), ``models create``, ``deploy``,
  ``chat``, ``keys create``. ``deploy`` deploys ``my-qwen`` instead of ``my-qwen-int4``: the tuning and
  compression that make it take minutes, so ``tune create``, ``compress create``, ``tune logs`` and
  ``services scale`` are parsed only (their own tests run them: test_cli_journey.py).
- **Python** (the OpenAI SDK example): run in a subprocess with ``base_url`` the platform's and the key
  printed by ``maas keys create``; the stream it opens is read to its usage chunk.
- **REST** (``curl``): run with bash (``set -euo pipefail``) in a folder holding ``my-model/`` (a tiny
  Qwen2), ``TOKEN`` the bootstrap admin's token, ``localhost:8000`` the platform's address and every
  ``curl -s`` with ``--fail-with-body`` so a non-2xx answer fails it; the model it creates is checked.
- **Inline mentions** in the prose: ``maas ...`` (the command exists and has every ``--flag`` named),
  ``scripts/...`` (exists), ``python -m M`` (the module exists and names each ``--flag``), ``cp F``
  (F is in the checkout); ``tune create``'s ``--format`` and ``compress create``'s ``-s`` values are
  ones the platform takes. The deployed service is deleted at the end (its instances are processes). The preset's (``maas presets list``, ``maas presets claim``, ``maas chat
  smollm2-135m-instruct "Hello!"``) run for real in the slow test at the end (its weights import for
  about a minute after the platform starts).
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from contracts import new_id
from services.apps.cli.main import app as cli_app
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAAS = Path(sys.executable).with_name("maas")      # the checkout's environment: .venv/bin/maas
README_URL = "http://127.0.0.1:8000"
PRESET = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int

    def commands(self) -> list[str]:
        """Logical lines: continuations joined; blank and comment-only lines dropped."""
        joined = self.text.replace("\\\n", " ")
        return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [Block(m.group(1), m.group(2), text[:m.start()].count("\n") + 1)
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]


def argv(command: str) -> list[str]:
    return shlex.split(command, comments=True)


# --- classifying the blocks ---------------------------------------------------------------------

def kind(block: Block) -> str:
    commands = block.commands()
    if block.lang == "python" and "OpenAI(" in block.text:
        return "python"
    if block.lang not in ("bash", "sh", "shell", "console", ""):
        return "unknown"
    if commands and all(c.startswith("scripts/") for c in commands):
        return "launch"
    if commands and commands[0].startswith("export MAAS_") and all(
            c.startswith(("export ", "MAAS_", "maas bootstrap-admin", "maas serve ")) for c in commands):
        return "external"
    if commands and all(c.startswith("maas ") for c in commands):
        return "cli"
    if commands and commands[0].startswith("TOKEN=") and any("curl " in c for c in commands):
        return "rest"
    return "unknown"


def blocks_of(wanted: str) -> list[Block]:
    found = [b for b in readme_blocks() if kind(b) == wanted]
    assert found, f"README.md has no {wanted} block any more: update this test's rules"
    return found


def test_every_command_block_of_the_readme_has_a_rule():
    unknown = [f"README.md line {b.line} ({b.lang or 'no language'}): {b.text.splitlines()[0]!r}"
               for b in readme_blocks() if kind(b) == "unknown"]
    assert not unknown, "blocks no rule of this test covers (add one):\n" + "\n".join(unknown)


# --- parsing with the real command definitions (no request is made) -------------------------------

def is_group(command) -> bool:
    return hasattr(command, "get_command")      # typer's own click: not a click.Group


def resolve(args: list[str]):
    """The ``maas`` command that ``args`` name, its name, parent context and remaining arguments."""
    command = typer.main.get_command(cli_app)
    ctx, name = typer.Context(command, info_name="maas"), "maas"
    while is_group(command) and args and not args[0].startswith("-"):
        name, *args = args
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`maas` has no command {name!r}"
        command, ctx = sub, typer.Context(sub, info_name=name, parent=ctx)
    return command, name, ctx.parent or ctx, args


def parse(command_line: str) -> None:
    """Fails as the real `maas` would on an unknown command, option or a bad argument."""
    words = argv(command_line)
    assert words[0] == "maas", command_line
    command, name, parent, rest = resolve(words[1:])
    assert not is_group(command), f"`{command_line}` names a group, not a command"
    try:
        command.make_context(name, list(rest), parent=parent)
    except typer.TyperException as exc:   # a usage error, unknown option, bad value
        raise AssertionError(f"`{command_line}` does not parse: {exc.format_message()}") from None


def options_of(command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def test_every_maas_line_of_the_readme_parses():
    for block in blocks_of("cli") + blocks_of("external"):
        for command in block.commands():
            if command.startswith("maas "):
                parse(command)


def test_the_install_start_and_test_commands_exist_and_take_the_flags_the_readme_gives():
    for block in blocks_of("launch"):
        for command in block.commands():
            script = ROOT / argv(command)[0]
            assert script.is_file() and os.access(script, os.X_OK), f"{command}: {script} is not an executable file"
    # scripts/up hands its arguments to `maas up`; the README gives it and `maas up` these flags.
    assert re.search(r'exec \.venv/bin/maas up "\$@"', (ROOT / "scripts/up").read_text())
    text = README.read_text()
    for flag in ("--data-dir", "--ray", "--log-level"):
        assert flag in text, f"README.md no longer mentions {flag}: update this test"
    up, _, _, _ = resolve(["up"])
    assert {"--data-dir", "--ray", "--log-level"} <= options_of(up)


async def test_maas_up_and_serve_help_run_and_list_the_readme_flags():
    for sub, flags in (("up", ("--data-dir", "--ray", "--log-level")), ("serve", ("--services", "--port", "--log-level"))):
        proc = await asyncio.create_subprocess_exec(str(MAAS), sub, "--help", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert all(flag in out.decode() for flag in flags), out.decode()


def test_the_external_servers_block_names_real_settings_and_services():
    from services.lib.common.settings import Settings
    from services.runtime import SERVICES

    (block,) = blocks_of("external")
    exported = re.findall(r"\b(MAAS_[A-Z0-9_]+)=", block.text)
    assert exported
    prefix = Settings.model_config.get("env_prefix", "")
    unknown = [v for v in exported if v.removeprefix(prefix).lower() not in Settings.model_fields]
    assert not unknown, f"README exports variables no setting reads: {unknown}"
    named: set[str] = set()
    for command in block.commands():
        words = argv(command)
        if words[:2] == ["maas", "serve"]:
            named |= set(words[words.index("--services") + 1].split(","))
    in_comments = set(re.findall(r"[a-z][a-z-]*", " ".join(re.findall(r"#(.*)", block.text)))) & set(SERVICES)
    assert named <= set(SERVICES), f"unknown services: {named - set(SERVICES)}"
    assert set(SERVICES) <= named | in_comments, f"the README's processes leave out {set(SERVICES) - named - in_comments}"


def test_the_python_example_compiles():
    for block in blocks_of("python"):
        compile(block.text, f"README.md:{block.line}", "exec")


def inline_mentions() -> list[str]:
    """Inline code spans of the prose that are commands: ``maas ...``, ``scripts/...``, ``python -m ...``
    and ``cp ...``."""
    prose = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.S | re.M)
    return [s for s in re.findall(r"`([^`\n]+)`", prose) if s.startswith(("maas", "scripts/", "python -m ", "cp "))]


def test_the_commands_mentioned_in_the_prose_exist_with_their_flags():
    mentions = inline_mentions()
    assert any(m.startswith("maas presets claim") for m in mentions)
    for mention in mentions:
        words = argv(mention)
        if words[0].startswith("scripts/"):
            assert (ROOT / words[0]).is_file(), mention
            continue
        if words[0] == "cp":
            assert (ROOT / words[1]).is_file(), f"`{mention}`: no {words[1]} in the checkout"
            continue
        if words[:2] == ["python", "-m"]:
            spec = importlib.util.find_spec(words[2])
            assert spec and spec.origin, f"`{mention}`: no module {words[2]}"
            source = Path(spec.origin).read_text()
            missing = [w for w in words[3:] if w.startswith("--") and f'"{w}"' not in source]
            assert not missing, f"`{mention}`: {words[2]} takes no {missing}"
            continue
        if words[0] != "maas":
            continue          # e.g. `maas:services:create`, an action name
        # `maas audit list|export`: each alternative
        alternatives = [words[:-1] + [w] for w in words[-1].split("|")] if "|" in words[-1] else [words]
        for alt in alternatives:
            command, _, _, rest = resolve(alt[1:])
            flags = {w.split("=")[0] for w in rest if w.startswith("-")}
            missing = flags - options_of(command)
            assert not missing, f"`{mention}`: no option {missing}"


# --- running them against the session's platform ------------------------------------------------

@dataclass
class Ran:
    code: int
    out: str
    err: str


class Shell:
    """Runs commands as a user at a terminal would: HOME a folder of its own, cwd ``work``."""

    def __init__(self, home: Path, work: Path):
        self.work = work
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MAAS_URL", "MAAS_TOKEN", "MAAS_API_KEY", "MAAS_CONFIG_DIR", "XDG_CONFIG_HOME")}
        self.env.update({"HOME": str(home), "COLUMNS": "200"})

    async def __call__(self, program: str, *args: str, input: str | None = None, env: dict | None = None,
                       timeout: float = 600) -> Ran:
        # A session of its own: no controlling terminal, so a hidden prompt reads stdin.
        proc = await asyncio.create_subprocess_exec(
            program, *args, cwd=self.work, env={**self.env, **(env or {})}, start_new_session=True,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input else None), timeout=timeout)
        return Ran(proc.returncode, out.decode(), err.decode())


async def new_user(api) -> tuple[str, str]:
    username, password = f"readme-{new_id()[:6]}", "readme-password-1"
    r = await api.post("/api/v1/users", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    return username, password


async def tiny_model(folder: Path) -> None:
    from services.lib.mlkit.tiny import build_tiny_model

    await asyncio.to_thread(build_tiny_model, folder)


def check_values(words: list[str]) -> None:
    """The values a parsed-only line gives that only the server would check: strategy and dataset format."""
    from services.compression.models import Strategy
    from services.tuning.datasets import DatasetFormat

    checked = {("compress", "create"): (("-s", set(Strategy)), ("--strategy", set(Strategy))),
               ("tune", "create"): (("--format", set(DatasetFormat)),)}
    for flag, allowed in checked.get(tuple(words[1:3]), ()):
        if flag in words:
            assert words[words.index(flag) + 1] in allowed, f"{' '.join(words)}: {flag} is one of {sorted(map(str, allowed))}"


async def test_the_cli_block_and_the_python_example_run_as_printed(running_platform, api, tmp_path):
    (block,) = blocks_of("cli")
    work = tmp_path / "work"
    await tiny_model(work / "my-hf-folder")
    shell = Shell(tmp_path / "home", work)
    username, password = await new_user(api)
    parse_only = {("tune", "create"), ("compress", "create"), ("tune", "logs"), ("services", "scale")}
    key = None
    for command in block.commands():
        words = argv(command)
        if tuple(words[1:3]) in parse_only:
            parse(command)
            check_values(words)
            continue
        env, stdin = None, None
        if words[1] == "login":
            assert words[2:] == ["--username", "admin"], command
            words[3], stdin, env = username, password + "\n", {"MAAS_URL": running_platform["url"]}
        elif words[1] == "deploy":
            assert words[2] == "my-qwen-int4", command
            words[2] = "my-qwen"
        elif tuple(words[1:3]) not in {("models", "create"), ("chat", "my-svc"), ("keys", "create")}:
            raise AssertionError(f"no rule for README command `{command}`: add one to this test")
        ran = await shell(str(MAAS), *words[1:], input=stdin, env=env)
        assert ran.code == 0, f"`{command}` failed:\n{ran.out}\n{ran.err}"
        if words[1] == "login":
            assert (tmp_path / "home" / ".config" / "openmaas" / "cli.json").is_file()   # where later commands read it
        if words[1] == "chat":
            assert ran.out.strip(), "maas chat printed no answer"
        if words[1] == "keys":
            key = re.search(r"\bsk-\S+", ran.out).group(0)
    assert key

    (example,) = blocks_of("python")
    assert f'base_url="{README_URL}/v1"' in example.text and 'api_key="sk-..."' in example.text
    script = (example.text.replace(f"{README_URL}/v1", f"{running_platform['url']}/v1").replace("sk-...", key)
              + "text, usage = '', None\n"
                "for chunk in reply:\n"
                "    text += ''.join(c.delta.content or '' for c in chunk.choices)\n"
                "    usage = chunk.usage or usage\n"
                "print(json.dumps({'text': text, 'usage': usage.model_dump()}))\n")
    (work / "example.py").write_text("import json\n" + script)
    ran = await shell(sys.executable, "example.py", timeout=120)
    assert ran.code == 0, ran.err
    answer = json.loads(ran.out.splitlines()[-1])
    assert answer["text"] and answer["usage"]["completion_tokens"] > 0

    # The service's instances are processes: stop them now rather than at the end of the session.
    ran = await shell(str(MAAS), "services", "delete", "my-svc", "--yes")
    assert ran.code == 0, ran.err


async def test_the_rest_block_runs_as_printed(running_platform, api, tmp_path):
    (block,) = blocks_of("rest")
    missing = [tool for tool in ("curl", "jq") if not shutil.which(tool)]
    assert not missing, f"the README's REST example uses {missing}: install them (scripts/test does, as root with apt)"
    await tiny_model(tmp_path / "my-model")
    address = running_platform["url"].removeprefix("http://")
    assert "TOKEN=..." in block.text and "localhost:8000" in block.text
    script = (block.text.replace("TOKEN=...", f"TOKEN={running_platform['admin'].token}")
              .replace("localhost:8000", address).replace("curl -s ", "curl -sS --fail-with-body "))
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", "set -euo pipefail\n" + script, cwd=tmp_path, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, f"{out.decode()}\n{err.decode()}"
    assert '"qwen2-custom"' in out.decode()          # the model square's answer

    async def settled():
        items = (await api.get("/api/v1/models", params={"name": "my-qwen"})).json()["items"]
        model = next((m for m in items if m["name"] == "my-qwen"), None)
        return model if model and model["status"] != "creating" else None
    model = await wait_for(settled, timeout=120)
    assert model["status"] == "created", model


@pytest.mark.slow
async def test_the_preset_commands_of_the_readme_work_once_it_is_imported(running_platform, api, tmp_path):
    """``maas presets list``, ``maas presets claim`` (the only preset) and ``maas chat <preset> "Hello!"``."""
    mentions = inline_mentions()
    commands = ["maas presets list", "maas presets claim", f'maas chat {PRESET} "Hello!"']
    assert all(c in mentions for c in commands), mentions
    username, password = await new_user(api)
    shell = Shell(tmp_path / "home", tmp_path)
    login = await shell(str(MAAS), "login", "--username", username, input=password + "\n",
                        env={"MAAS_URL": running_platform["url"]})
    assert login.code == 0, login.err

    async def imported():
        items = (await api.get("/api/v1/preset-services")).json()["items"]
        return any(p["name"] == PRESET and p["available"] for p in items)
    await wait_for(imported, timeout=600)
    for command in commands:
        ran = await shell(str(MAAS), *argv(command)[1:], timeout=900)
        assert ran.code == 0, f"`{command}` failed:\n{ran.out}\n{ran.err}"
        assert ran.out.strip(), command
