"""The Redis store on a real Redis Cluster (three masters started here): hash tags keep each
decision's keys in one slot, and decisions match the memory store."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest

from bastion.ratelimit import MemoryStore, RedisStore, parse_rate

ALGORITHMS = ["fixed_window", "sliding_log", "sliding_counter", "token_bucket", "leaky_bucket", "gcra"]


def _free_ports(n):
    """Ports whose cluster-bus twin (port + 10000) is free and valid too."""
    import random

    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randint(20000, 45000)
        if port in ports:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        ports.append(port)
    return ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        pytest.fail("redis-server and redis-cli are needed for the cluster test")
    ports = _free_ports(3)
    procs = []
    for port in ports:
        d = tmp_path_factory.mktemp(f"node{port}")
        procs.append(
            subprocess.Popen(
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(d / "nodes.conf"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(d),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
        created = subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            pytest.fail(f"could not create the test cluster: {created.stdout[-500:]} {created.stderr[-500:]}")
        for _ in range(100):  # wait until every node agrees the cluster is ok
            out = subprocess.run([cli, "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True).stdout
            if "cluster_state:ok" in out:
                break
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def test_cluster_answers_like_memory(cluster):
    async def main():
        store = RedisStore(cluster, prefix="cl", timeout=2)
        memory = MemoryStore()
        rate = parse_rate("3/second burst 4")
        mismatches = []
        for algorithm in ALGORITHMS:
            for i in range(8):
                key = f"client-{i % 3}"  # several keys: several slots
                now = 7000.0 + i * 0.2
                got = await store.hit(algorithm, key, rate, 1, now=now)
                want = memory.hit_sync(algorithm, key, rate, 1, now=now)
                if (got.allowed, got.remaining) != (want.allowed, want.remaining):
                    mismatches.append((algorithm, i, got, want))
        await store.close()
        return mismatches

    assert asyncio.run(main()) == []


def test_cluster_keys_spread_over_slots_with_hash_tags(cluster):
    store = RedisStore.__new__(RedisStore)
    store.prefix = "cl"
    keys = {store.key("sliding_log", f"k{i}", parse_rate("1/second")) for i in range(50)}
    tags = {k[k.index("{") + 1 : k.index("}")] for k in keys}
    assert len(tags) == 50  # distinct clients land on distinct tags (and so spread over slots)
