import shutil
import socket
import subprocess
import time
import uuid

import pytest


@pytest.fixture()
def prefix():
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture()
def private_redis(tmp_path):
    """A redis-server of this test's own: it can be stopped and started again, and its command
    counts are the test's alone (the shared Redis counts every xdist worker's commands)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed for this test (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def start():
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                return proc
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    state = {"proc": start()}
    yield port, state, start
    state["proc"].terminate()
    state["proc"].wait(10)
