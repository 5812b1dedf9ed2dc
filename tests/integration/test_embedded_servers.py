"""The embedded default servers (nanio S3, SecantusDB MongoDB, Tansu Kafka on nanio) are real.

Uses the session ``embedded_servers`` fixture for the protocol checks and a private instance for
the stop/start durability checks.
"""
from __future__ import annotations

import asyncio
import io
import json
import socket
import stat
import uuid
from pathlib import Path

import psutil
import pymongo
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.lib.common.settings import get_settings
from services.lib.embedded.servers import EmbeddedServerError, EmbeddedServers

pytestmark = pytest.mark.integration

# Tansu holds a JoinGroup for about session_timeout_ms / 2 (default 10 s -> ~5 s per join), so the
# consumers keep aiokafka's default session timeout: raising it makes every join slower.


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def _s3_put_get(servers: EmbeddedServers, bucket: str, key: str, body: bytes | None) -> bytes:
    client = servers.minio_client()
    if body is not None:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        client.put_object(bucket, key, io.BytesIO(body), len(body))
    resp = client.get_object(bucket, key)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


async def _create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v, key=b"k")
    finally:
        await producer.stop()


async def _consume(consumer: AIOKafkaConsumer, n: int, timeout: float = 40) -> list[bytes]:
    out: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < n:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"got only {out!r} of {n} messages"
        batch = await consumer.getmany(timeout_ms=1000, max_records=n - len(out))
        for msgs in batch.values():
            out.extend(m.value for m in msgs)
    return out


async def _read_from_start(bootstrap: str, topic: str, n: int) -> list[bytes]:
    """The first ``n`` records of partition 0, read without a group."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        return await _consume(reader, n)
    finally:
        await reader.stop()


def _child_pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _children_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if str(data_dir) in " ".join(child.cmdline()) or child.cwd() == str(data_dir):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


# ------------------------------------------------------------------------------------------------
# the shared session stack
# ------------------------------------------------------------------------------------------------

def test_s3_put_get(embedded_servers: EmbeddedServers) -> None:
    key = f"dir/{_uid()}.bin"
    assert _s3_put_get(embedded_servers, "maas-test", key, b"hello s3") == b"hello s3"
    # the Kafka bucket was created before tansu started
    assert embedded_servers.minio_client().bucket_exists(embedded_servers.kafka_bucket)


def test_s3_wrong_secret_rejected(embedded_servers: EmbeddedServers) -> None:
    from minio import Minio
    from minio.error import S3Error

    bad = Minio(embedded_servers.s3_endpoint, access_key=embedded_servers.s3_access_key,
                secret_key="wrong-secret", secure=False)
    with pytest.raises(S3Error):
        bad.list_buckets()


def test_mongo_insert_find_and_transaction(embedded_servers: EmbeddedServers) -> None:
    with pymongo.MongoClient(embedded_servers.mongo_url, serverSelectionTimeoutMS=5000) as client:
        coll = client["maas_test"][f"c_{_uid()}"]
        coll.insert_one({"_id": "a", "n": 1})
        assert coll.find_one({"_id": "a"})["n"] == 1

        with client.start_session() as session:
            with session.start_transaction():
                coll.insert_one({"_id": "b", "n": 2}, session=session)
                coll.update_one({"_id": "a"}, {"$inc": {"n": 10}}, session=session)
        assert coll.find_one({"_id": "a"})["n"] == 11
        assert coll.find_one({"_id": "b"})["n"] == 2

        with client.start_session() as session:
            session.start_transaction()
            coll.insert_one({"_id": "c"}, session=session)
            session.abort_transaction()
        assert coll.find_one({"_id": "c"}) is None
        assert coll.count_documents({}) == 2


async def test_kafka_produce_consume(embedded_servers: EmbeddedServers) -> None:
    bootstrap = embedded_servers.kafka_bootstrap
    topic = f"maas.test.{_uid()}"
    await _create_topic(bootstrap, topic)
    await _produce(bootstrap, topic, [b"m0", b"m1", b"m2"])
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"g-{_uid()}", auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        assert await _consume(consumer, 3) == [b"m0", b"m1", b"m2"]
        await consumer.commit()
        assert await consumer.committed(TopicPartition(topic, 0)) == 3
    finally:
        await consumer.stop()


def test_settings_env_and_platform_env(embedded_servers: EmbeddedServers, platform_env: dict[str, str]) -> None:
    env = embedded_servers.settings_env()
    assert platform_env == env
    assert "directConnection=true" in env["MAAS_MONGO_URL"]
    s = get_settings()
    assert s.kafka_bootstrap == embedded_servers.kafka_bootstrap
    assert s.mongo_url == embedded_servers.mongo_url
    assert s.s3_endpoint == embedded_servers.s3_endpoint
    assert (s.s3_access_key, s.s3_secret_key) == (embedded_servers.s3_access_key, embedded_servers.s3_secret_key)
    assert s.s3_secure is False
    for host_port in (s.kafka_bootstrap, s.s3_endpoint):
        assert host_port.startswith("127.0.0.1:")


def test_data_dir_is_locked(embedded_servers: EmbeddedServers) -> None:
    with pytest.raises(EmbeddedServerError, match="in use"):
        EmbeddedServers(embedded_servers.data_dir).start(timeout=5)
    assert embedded_servers.running


def test_layout(embedded_servers: EmbeddedServers) -> None:
    d = embedded_servers.data_dir
    for sub in ("s3", "mongo", "logs"):
        assert (d / sub).is_dir()
    for name in ("s3", "mongo", "kafka"):
        assert (d / "logs" / f"{name}.log").stat().st_size > 0
    assert stat.S_IMODE((d / "credentials.json").stat().st_mode) == 0o600
    # tansu keeps its data in the nanio bucket
    assert (d / "s3" / embedded_servers.kafka_bucket).is_dir()


# ------------------------------------------------------------------------------------------------
# a private stack: stop + start on the same data dir
# ------------------------------------------------------------------------------------------------

async def test_stop_start_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    topic, group = "maas.durable", "durable-group"
    servers = EmbeddedServers(data_dir)
    try:
        await asyncio.to_thread(servers.start)  # start() works off the main thread too
        creds = (servers.s3_access_key, servers.s3_secret_key)
        stored = json.loads((data_dir / "credentials.json").read_text())
        assert (stored["s3_access_key"], stored["s3_secret_key"]) == creds
        first_ports = dict(servers.ports)

        _s3_put_get(servers, "maas-durable", "obj.txt", b"persisted")
        with pymongo.MongoClient(servers.mongo_url, serverSelectionTimeoutMS=5000) as client:
            with client.start_session() as session, session.start_transaction():
                client.maas.docs.insert_one({"_id": "doc1", "v": 42}, session=session)

        bootstrap = servers.kafka_bootstrap
        await _create_topic(bootstrap, topic)
        await _produce(bootstrap, topic, [b"m0", b"m1", b"m2"])
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            got = await _consume(consumer, 3)
            assert got == [b"m0", b"m1", b"m2"]
            tp = TopicPartition(topic, 0)
            await consumer.commit({tp: 2})  # m2 left "unprocessed"
        finally:
            await consumer.stop()

        pids = list(servers.pids().values())
        assert len(pids) == 3
        await asyncio.to_thread(servers.stop)
        assert _child_pids_alive(pids) == []
        assert _children_using(data_dir) == []
        servers.stop()  # idempotent

        await asyncio.to_thread(servers.start)
        assert (servers.s3_access_key, servers.s3_secret_key) == creds
        # ports are chosen afresh (they may differ); the data must not depend on them
        assert set(servers.ports) == set(first_ports)
        assert _s3_put_get(servers, "maas-durable", "obj.txt", None) == b"persisted"
        with pymongo.MongoClient(servers.mongo_url, serverSelectionTimeoutMS=5000) as client:
            assert client.maas.docs.find_one({"_id": "doc1"})["v"] == 42

        bootstrap = servers.kafka_bootstrap
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            assert await _consume(consumer, 1) == [b"m2"]  # resumes at the committed offset
            assert await consumer.committed(TopicPartition(topic, 0)) == 2
        finally:
            await consumer.stop()

        assert await _read_from_start(bootstrap, topic, 3) == [b"m0", b"m1", b"m2"]
    finally:
        pids = list(servers.pids().values())
        await asyncio.to_thread(servers.stop)
    assert _child_pids_alive(pids) == []
    assert _children_using(data_dir) == []


def test_explicit_credentials_are_persisted(tmp_path: Path) -> None:
    with EmbeddedServers(tmp_path, s3_access_key="maasexplicit", s3_secret_key="explicit-secret-123") as servers:
        assert servers.minio_client().list_buckets() is not None
        assert servers.settings_env()["MAAS_S3_ACCESS_KEY"] == "maasexplicit"
    stored = json.loads((tmp_path / "credentials.json").read_text())
    assert stored == {"s3_access_key": "maasexplicit", "s3_secret_key": "explicit-secret-123"}
    assert EmbeddedServers(tmp_path).running is False
    with pytest.raises(RuntimeError):
        EmbeddedServers(tmp_path).settings_env()


def test_unhealthy_server_error_has_log_tail(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    servers = EmbeddedServers(tmp_path, ports={"mongo": port})
    try:
        with pytest.raises(EmbeddedServerError) as info:
            servers.start(timeout=20)
    finally:
        blocker.close()
    msg = str(info.value)
    assert "mongo" in msg and "Address already in use" in msg and "mongo.log" in msg
    # what had started (nanio) was stopped again
    assert servers.pids() == {}
    assert _children_using(tmp_path) == []


def test_uploads_in_flight_are_not_listed(embedded_servers: EmbeddedServers) -> None:
    """Tansu lists its log segments while writing new ones: a staged '.tmp.*' file must not show."""
    client = embedded_servers.minio_client()
    client.make_bucket("staging-check")
    client.put_object("staging-check", "seg/00000000000000000001", io.BytesIO(b"x"), 1)
    (embedded_servers.s3_dir / "staging-check" / "seg" / ".tmp.0123abcd").write_bytes(b"partial")
    names = [o.object_name for o in client.list_objects("staging-check", prefix="seg/", recursive=True)]
    assert names == ["seg/00000000000000000001"]


async def test_a_killed_server_is_restarted_on_its_data_and_port_and_clients_carry_on(tmp_path: Path) -> None:
    """``maas up`` supervises its servers: kill -9 of any of them, and it is back on the same port with
    the same data, while a client opened before the kill (motor, aiokafka, minio) works again."""
    from motor.motor_asyncio import AsyncIOMotorClient

    servers = EmbeddedServers(tmp_path / "stack")
    restarted: list[str] = []
    try:
        await asyncio.to_thread(servers.start)
        ports = dict(servers.ports)
        servers.supervise(interval=0.2, on_restart=restarted.append)
        mongo = AsyncIOMotorClient(servers.mongo_url, serverSelectionTimeoutMS=30_000)
        await mongo.maas.docs.insert_one({"_id": "before", "v": 1})
        _s3_put_get(servers, "maas-kept", "obj.txt", b"kept")
        topic = f"maas.kept.{_uid()}"
        await _create_topic(servers.kafka_bootstrap, topic)
        await _produce(servers.kafka_bootstrap, topic, [b"before"])

        for i, name in enumerate(("mongo", "kafka", "s3")):
            old_pid = servers.pids()[name]
            psutil.Process(old_pid).kill()

            async def back(count=i + 1):
                while len(restarted) < count:
                    await asyncio.sleep(0.2)
            await asyncio.wait_for(back(), timeout=90)
            assert restarted[-1] == name and servers.pids()[name] != old_pid
            assert servers.running and servers.ports == ports

        # The client of before the kills reconnects by itself and finds the data; new writes work.
        assert (await mongo.maas.docs.find_one({"_id": "before"}))["v"] == 1
        await mongo.maas.docs.insert_one({"_id": "after", "v": 2})
        mongo.close()
        assert _s3_put_get(servers, "maas-kept", "obj.txt", None) == b"kept"
        await _produce(servers.kafka_bootstrap, topic, [b"after"])
        assert await _read_from_start(servers.kafka_bootstrap, topic, 2) == [b"before", b"after"]
        assert restarted == ["mongo", "kafka", "s3"]
    finally:
        pids = list(servers.pids().values())
        await asyncio.to_thread(servers.stop)
    assert _child_pids_alive(pids) == []
