"""``maas up``, ``maas serve``, ``maas bootstrap-admin``: start the platform (embedded or against external servers)."""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

import typer
from rich.console import Console

from services.apps.cli.local_ray import LocalRayHead, LocalRayWorkers
from services.lib.common.log_setup import LEVELS, configure_logging, parse_level

console = Console()
log = logging.getLogger(__name__)


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("openmaas"))


def _log_level(value: str) -> str:
    try:
        parse_level(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value.lower()


LOG_LEVEL_OPTION = typer.Option("info", "--log-level", envvar="MAAS_LOG_LEVEL", callback=_log_level,
                                help=f"{' | '.join(LEVELS)}: info shows state changes, warnings and errors; "
                                     "debug adds the libraries' own lines (HTTP probes, Kafka, onnxruntime)")


def _serve(*, host: str, port: int, services: str, log_level: str = "info") -> None:
    import uvicorn

    from services.lib.common.http import server_config
    from services.lib.common.settings import get_settings
    from services.runtime import build_app

    configure_logging(log_level)
    get_settings.cache_clear()
    settings = get_settings()
    uvicorn.Server(server_config(build_app(settings, services=services), host=host, port=port,
                                 log_level=log_level)).run()


async def _bootstrap_admin():
    from services.lib.common.context import Platform
    from services.lib.common.settings import get_settings
    from services.gateway.accounts.identity import INDEXES, ensure_bootstrap_admin

    get_settings.cache_clear()
    platform = Platform.connect(get_settings())
    try:
        await platform.mongo.ensure_indexes(INDEXES)
        return await ensure_bootstrap_admin(platform)
    finally:
        platform.mongo.close()


async def _preset_imports() -> list:
    """The import state of the preset weights, read once for the start-up panel (empty on a first start)."""
    from services.lib.common.context import Platform
    from services.lib.common.settings import get_settings
    from services.lib.readmodels.model_refs import preset_imports

    get_settings.cache_clear()
    platform = Platform.connect(get_settings())
    try:
        return list((await preset_imports(platform)).values())
    finally:
        platform.mongo.close()


def _show_presets(imports: list) -> None:
    """One line: whether the preset service can be called yet (its weights import on a first start)."""
    if imports and all(state.status == "ready" for state in imports):
        names = ", ".join(sorted(state.template_id for state in imports))
        console.print(f"Preset service {names}: ready (claim its free quota with `maas presets claim`)",
                      soft_wrap=True, highlight=False, markup=False)
        return
    failed = sorted(state.template_id for state in imports if state.status == "failed")
    if failed:
        console.print(f"Preset service {', '.join(failed)}: its last weight import failed; importing again now "
                      "— `maas presets list` shows progress", soft_wrap=True, highlight=False, markup=False)
        return
    console.print("Preset service: importing its weights in the background in the background (about a minute on a first start) "
                  "— `maas presets list` shows progress", soft_wrap=True, highlight=False, markup=False)


def _show_admin(admin, url: str) -> None:
    if admin is None:
        console.print("[dim]Admin account exists already (its secrets were shown on the first start). "
                      "Log in with POST /api/v1/auth/login.[/dim]")
        return
    # Plain lines, never wrapped (narrow terminal, output to a file): a password or token broken over
    # two lines, or inside a box's borders, cannot be pasted, and a command with a line break fails.
    console.print("[bold yellow]Bootstrap admin — shown once, store it now[/bold yellow]")
    for line in (f"username: {admin.username}", f"password: {admin.password}", f"token:    {admin.token}",
                 "try it:", f"  curl -H 'Authorization: Bearer {admin.token}' {url}/api/v1/templates",
                 f"  maas login --url {url} --username {admin.username}"):
        console.print(line, soft_wrap=True, highlight=False, markup=False)


class PoolNodeSupervisor:
    """``maas up --ray``'s local provisioner at work: a thread that reconciles each dedicated pool's
    desired nodes (``node_count`` in MongoDB) with ``ray start`` children of this process
    (``LocalRayWorkers``), the process that owns the Ray head; ``stop()`` ends them all."""

    def __init__(self, head: LocalRayHead):
        self.workers = LocalRayWorkers(head)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PoolNodeSupervisor":
        from services.lib.common.mongo import Mongo
        from services.lib.common.settings import get_settings
        from services.lib.pools.provisioning import reconcile_forever, ray_node_reader

        get_settings.cache_clear()
        settings = get_settings()

        async def reconcile() -> None:
            mongo = Mongo(settings)
            try:
                await reconcile_forever(mongo=mongo, provisioner=self.workers, read_nodes=ray_node_reader(settings),
                                        interval=settings.pool_reconcile_seconds, stop=self._stop)
            finally:
                mongo.close()

        def run() -> None:
            try:
                asyncio.run(reconcile())
            except Exception:   # noqa: BLE001 - said once; the platform serves on without resizing
                log.exception("the pool node supervisor stopped")
        self._thread = threading.Thread(target=run, name="pool-nodes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.workers.stop_all()


def up(
    data_dir: Path = typer.Option(None, "--data-dir", help="where all data lives (default: the user data dir)"),
    host: str = typer.Option("127.0.0.1", help="API bind address"),
    port: int = typer.Option(8000, help="API port"),
    ray: bool = typer.Option(False, "--ray", help="also start a one-node Ray cluster (this machine = the public "
                                                  "pool) and run job work on it, as on a real cluster"),
    log_level: str = LOG_LEVEL_OPTION,
) -> None:
    """Start the embedded Kafka, MongoDB and S3 servers, then every service, in the foreground."""
    from services.lib.common import metrics
    from services.lib.common.private_files import PRIVATE_UMASK, private_dir
    from services.lib.embedded.servers import EmbeddedServers

    # Everything this process and its children write (weights, datasets, logs, traces, credentials)
    # is owner-only: one machine may have other users.
    os.umask(PRIVATE_UMASK)
    configure_logging(log_level)
    data_dir = private_dir((data_dir or _default_data_dir()).expanduser().resolve())
    console.print(f"[bold]OpenMaaS[/bold] data dir: {data_dir}")
    servers = EmbeddedServers(data_dir)
    with console.status("starting embedded servers (S3, MongoDB, Kafka)…"):
        servers.start()
    # A server that dies is restarted on its data and port; the services' clients reconnect by themselves.
    servers.supervise(on_restart=lambda name: metrics.embedded_server_restarts.labels(server=name).inc())
    os.environ.update(servers.settings_env())
    os.environ.setdefault("MAAS_WORK_DIR", str(data_dir / "work"))
    private_dir(Path(os.environ["MAAS_WORK_DIR"]))
    head = LocalRayHead(data_dir=data_dir) if ray else None
    pool_nodes: PoolNodeSupervisor | None = None
    try:
        if head is not None:
            with console.status("starting a one-node Ray cluster…"):
                os.environ["MAAS_RAY_ADDRESS"] = head.start()
            os.environ.update(head.driver_env)   # the platform joins it as a driver: its token, loopback
            # Dedicated pools resized through the API get their nodes as `ray start` children of this process.
            os.environ["MAAS_POOL_PROVISIONER"] = "local"
            console.print(f"  MAAS_RAY_ADDRESS={head.address} (this machine: pool 'public')")
            pool_nodes = PoolNodeSupervisor(head).start()
        for name, value in servers.settings_env().items():
            console.print(f"  {name}={value}" if "SECRET" not in name else f"  {name}=***")
        url = f"http://{host}:{port}"
        _show_admin(asyncio.run(_bootstrap_admin()), url)
        _show_presets(asyncio.run(_preset_imports()))
        console.print(f"API and console: [bold]{url}[/bold]   OpenAPI: {url}/docs   (Ctrl-C stops everything)")
        _serve(host=host, port=port, services="all", log_level=log_level)
    finally:
        if pool_nodes is not None:
            with console.status("stopping the nodes of dedicated pools…"):
                pool_nodes.stop()
        if head is not None:
            with console.status("stopping the Ray cluster…"):
                head.stop()
        with console.status("stopping embedded servers…"):
            servers.stop()
        console.print("stopped.")


def serve(
    services: str = typer.Option("all", help="comma-separated services to host, or 'all': gateway, registry, registry-worker, tuning, "
                                               "tuning-worker, compression, compression-worker, serving, deployer, "
                                               "notifier, observability, console"),
    host: str = typer.Option("0.0.0.0", envvar="MAAS_API_HOST"),
    port: int = typer.Option(8000, envvar="MAAS_API_PORT"),
    log_level: str = LOG_LEVEL_OPTION,
) -> None:
    """Run services against external servers configured by MAAS_* variables (production)."""
    _serve(host=host, port=port, services=services, log_level=log_level)


def bootstrap_admin() -> None:
    """Create the first admin on an external database (prints its secrets once)."""
    _show_admin(asyncio.run(_bootstrap_admin()), "http://<gateway>")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(serve)
    app.command("bootstrap-admin")(bootstrap_admin)
