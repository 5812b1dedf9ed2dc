"""LocalProcessBackend with a trivial Python HTTP server standing in for the inference server."""
from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import textwrap

import pytest

from services.deployer.backend import Health, InstanceLaunch
from services.deployer.local import LocalProcessBackend, _read_lines

SERVER = textwrap.dedent("""
    import http.server, signal, sys, threading, time
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    started = time.monotonic()
    print("loading model", flush=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ready = time.monotonic() - started > delay
            self.send_response(200 if ready else 503)
            self.end_headers()
            self.wfile.write(b"ok" if ready else b"loading")
        def log_message(self, *args):
            print("GET", self.path, flush=True)

    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    def bye(*_):
        print("shutting down", flush=True)
        threading.Thread(target=server.shutdown).start()
    signal.signal(signal.SIGTERM, bye)
    server.serve_forever()
    print("bye", flush=True)
""")


def _command(delay: float):
    def command(launch, model_dir, port, host):
        return [sys.executable, "-c", SERVER, str(port), str(delay)]
    return command


def _launch(instance_id: str = "inst1") -> InstanceLaunch:
    return InstanceLaunch(instance_id=instance_id, service_id="svc", served_model_name="chat",
                          model_uri="s3://b/m/", max_model_len=128, secret="s3cret")


async def _until(backend, handle, wanted: Health, timeout: float = 20) -> Health:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        health = await backend.health(handle)
        if health is wanted or asyncio.get_running_loop().time() > deadline:
            return health
        await asyncio.sleep(0.05)


async def test_an_instance_is_ready_only_once_its_health_check_passes_and_stops_cleanly(tmp_path):
    backend = LocalProcessBackend(root=tmp_path, command=_command(delay=0.5))
    try:
        handle = await backend.start(_launch())
        assert handle.url.startswith("http://127.0.0.1:") and handle.details["pid"]
        assert await backend.health(handle) is Health.not_ready   # still "loading"
        assert await _until(backend, handle, Health.ready) is Health.ready
        assert [h.instance_id for h in await backend.list()] == ["inst1"]
        await backend.stop(handle, grace_seconds=10)
        assert await backend.health(handle) is Health.exited
        assert await backend.list() == []
        lines, offset = await backend.read_logs(handle, offset=0)
        assert lines[0] == "loading model" and "GET /health" in lines and lines[-1] == "bye"
        assert "shutting down" in lines  # SIGTERM was handled: in-flight work could finish
        more, again = await backend.read_logs(handle, offset=offset)
        assert more == [] and again == offset
    finally:
        await backend.close()


async def test_a_crashing_instance_reports_exited(tmp_path):
    def command(launch, model_dir, port, host):
        return [sys.executable, "-c", "import sys; print('boom: no model', flush=True); sys.exit(3)"]

    backend = LocalProcessBackend(root=tmp_path, command=command)
    try:
        handle = await backend.start(_launch("crash"))
        assert await _until(backend, handle, Health.exited) is Health.exited
        lines, _ = await backend.read_logs(handle, offset=0)
        assert lines == ["boom: no model"]
    finally:
        await backend.close()


async def test_an_instance_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    script = ("import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('stubborn', flush=True); time.sleep(60)")

    def command(launch, model_dir, port, host):
        return [sys.executable, "-c", script]

    backend = LocalProcessBackend(root=tmp_path, command=command)
    handle = await backend.start(_launch("stubborn"))
    await asyncio.sleep(0.3)
    await backend.stop(handle, grace_seconds=0.5)
    assert await backend.health(handle) is Health.exited
    await backend.close()


def test_log_reading_keeps_a_partial_last_line_for_later(tmp_path):
    path = tmp_path / "x.log"
    path.write_bytes(b"one\ntwo\nthr")
    lines, offset = _read_lines(path, 0)
    assert lines == ["one", "two"] and offset == 8
    with open(path, "ab") as f:
        f.write("ee \xe4\n".encode())
    lines, offset = _read_lines(path, offset)
    assert lines == ["three \xe4"] and offset == path.stat().st_size
    assert _read_lines(tmp_path / "missing.log", 0) == ([], 0)


@pytest.mark.parametrize("cpus", [1, 4])
async def test_the_instance_spec_sets_the_thread_count(tmp_path, cpus):
    script = "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['MAAS_INSTANCE_ID'], flush=True)"

    def command(launch, model_dir, port, host):
        return [sys.executable, "-c", script]

    backend = LocalProcessBackend(root=tmp_path, command=command)
    launch = InstanceLaunch(instance_id=f"t{cpus}", service_id="svc", served_model_name="chat", model_uri="s3://b/m/",
                            max_model_len=128, secret="s3cret", cpus=cpus)
    handle = await backend.start(launch)
    await _until(backend, handle, Health.exited)
    lines, _ = await backend.read_logs(handle, offset=0)
    assert lines == [f"{cpus} t{cpus}"]
    await backend.close()


async def test_an_instance_gets_its_secret_but_no_platform_credentials_and_a_private_log(tmp_path, monkeypatch):
    monkeypatch.setenv("MAAS_S3_SECRET_KEY", "platform-s3-secret")
    monkeypatch.setenv("MAAS_MONGO_URL", "mongodb://root:pw@db:27017/")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    script = "import json, os; print(json.dumps(dict(os.environ)), flush=True)"

    def command(launch, model_dir, port, host):
        return [sys.executable, "-c", script]

    backend = LocalProcessBackend(root=tmp_path, command=command)
    handle = await backend.start(_launch("env"))
    await _until(backend, handle, Health.exited)
    lines, _ = await backend.read_logs(handle, offset=0)
    env = json.loads(lines[0])
    assert env["MAAS_INSTANCE_SECRET"] == "s3cret" and env["MAAS_INSTANCE_ID"] == "env"
    assert not {"MAAS_S3_SECRET_KEY", "MAAS_MONGO_URL", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert "PATH" in env   # the interpreter's own settings stay
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    assert stat.S_IMODE(os.stat(handle.details["log"]).st_mode) == 0o600
    await backend.close()
