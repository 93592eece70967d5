"""The container image (deploy/Containerfile), built and run the way this machine allows: the
Debian base made with debootstrap and imported with podman (no registry is reachable), built with
`buildah bud --isolation chroot`, then `bastion check` and `bastion serve` run inside it with
`buildah run --isolation chroot` (containers cannot be started with podman here: setrlimit is not
permitted) against an upstream on the host's loopback. Minutes long: marked slow
(`scripts/test -m slow`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from helpers import raw_request, wait_for
from upstream_app import SLOW_STARTED

from .tools import need

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
BASE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/bastion:test"
MIRROR = os.environ.get("BASTION_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"  # lets pip in the build through a TLS-intercepting proxy
TOKEN = "image-test-admin-token-" + "x" * 16


def sh(*args: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    buildah = need("buildah", "buildah")
    podman = need("podman", "podman")
    debootstrap = need("debootstrap", "debootstrap")
    have_base = subprocess.run([podman, "image", "exists", BASE]).returncode == 0
    if not have_base or os.environ.get("BASTION_REBUILD_BASE"):
        rootfs = tmp_path_factory.mktemp("rootfs")
        sh(debootstrap, "--variant=minbase", "bookworm", str(rootfs), MIRROR)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        sh(podman, "import", "-", BASE, stdin=tar.stdout)
        assert tar.wait() == 0
        shutil.rmtree(rootfs, ignore_errors=True)
    build = [
        buildah,
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--pull-never",
        "--layers",
        "-f",
        "deploy/Containerfile",
        "-t",
        IMAGE,
    ]
    if os.path.exists(HOST_CA):
        build += ["-v", f"{HOST_CA}:/run/build-ca.crt:ro", "--build-arg", "PIP_CERT=/run/build-ca.crt"]
    sh(*build, ".", cwd=ROOT, timeout=3000)
    ctr = sh(buildah, "from", "--pull-never", IMAGE).stdout.strip().splitlines()[-1]
    try:
        yield ctr
    finally:
        subprocess.run([buildah, "rm", ctr], capture_output=True)


def brun(
    ctr: str,
    *cmd: str,
    env: dict[str, str] | None = None,
    volumes: tuple[str, ...] = (),
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    args = ["buildah", "run", "--isolation", "chroot"]
    for k, v in (env or {}).items():
        args += ["-e", f"{k}={v}"]
    for v in volumes:
        args += ["-v", v]
    r = subprocess.run([*args, ctr, "--", *cmd], capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def image_config() -> dict:
    doc = json.loads(sh("buildah", "inspect", "--type", "image", IMAGE).stdout)
    return doc["Docker"]["config"]


def test_image_is_non_root_with_crs_healthcheck_and_documented_config(container):
    cfg = image_config()
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["/opt/bastion/bin/bastion"]
    assert cfg["Cmd"] == ["serve", "--config", "/etc/bastion/bastion.yaml"]
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "9901/tcp"}
    assert cfg["StopSignal"] == "SIGTERM"
    assert "/healthz" in " ".join(cfg["Healthcheck"]["Test"])
    assert brun(container, "id", "-u").stdout.strip() == "10001"
    assert (
        "modsecurity-crs"
        in brun(
            container, "sh", "-c", "ls /usr/share/modsecurity-crs/rules | head -3; dpkg-query -W modsecurity-crs"
        ).stdout
    )
    # the config is the image's, not writable by the gateway's user
    assert brun(container, "sh", "-c", "test -w /etc/bastion/bastion.yaml", check=False).returncode != 0
    brun(container, "sh", "-c", "test ! -e /tmp/wheels && test ! -e /src")  # the build stage stayed behind


def test_bastion_check_inside_the_image(container):
    r = brun(container, "bastion", "check", "/etc/bastion/bastion.yaml", env={"BASTION_ADMIN_TOKEN": TOKEN})
    assert "ok" in r.stderr
    # without the admin token the default config is refused (an open admin listener is never allowed)
    r = brun(container, "bastion", "check", "/etc/bastion/bastion.yaml", check=False)
    assert r.returncode == 2 and "BASTION_ADMIN_TOKEN" in r.stderr


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _serving_pid(root_pid: int) -> int:
    for p in _descendants(root_pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the Python process itself, not buildah-chroot-exec (whose arguments are the same command)
        if cmd[0].rsplit(b"/", 1)[-1].startswith(b"python") and b"serve" in cmd:
            return p
    raise AssertionError("no bastion serve process under buildah run")


def test_serve_inside_the_image_against_a_loopback_upstream(container, upstream):
    port, admin = free_port(), free_port()
    conf = Path(tempfile.mkdtemp(prefix="bastion-image-conf-"))
    conf.chmod(0o755)
    text = (ROOT / "deploy/bastion.yaml").read_text()
    (conf / "bastion.yaml").write_text(text)
    (conf / "bastion.yaml").chmod(0o644)
    env = {
        "BASTION_UPSTREAM_URL": upstream.url,
        "BASTION_PORT": str(port),
        "BASTION_ADMIN_PORT": str(admin),
        "BASTION_ADMIN_TOKEN": TOKEN,
    }
    args = ["buildah", "run", "--isolation", "chroot", "-v", f"{conf}:/etc/bastion:ro"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    proc = subprocess.Popen(
        [*args, container, "--", "bastion", "serve", "--config", "/etc/bastion/bastion.yaml"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 120
        while True:
            try:
                if raw_request(admin, "GET", "/healthz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, "".join(output)
            assert time.time() < deadline, "the gateway in the image did not start:\n" + "".join(output)
            time.sleep(0.5)
        # proxied to the host's upstream, with the gateway's headers
        r = raw_request(port, "GET", "/hello?x=1")
        assert r.status == 200, r.body
        assert r.header("x-request-id") and r.header("x-content-type-options") == "nosniff"
        assert r.json()["path"] == "/hello"
        # the WAF with the CRS shipped in the image
        r = raw_request(port, "GET", "/x?id=1%27%20OR%20%271%27%3D%271")
        assert r.status == 403 and r.json()["type"].endswith("/waf-blocked"), r.body
        # the image's HEALTHCHECK command, run inside the image, passes
        hc = image_config()["Healthcheck"]["Test"]
        assert hc[0] == "CMD"
        brun(container, *hc[1:], env={"BASTION_ADMIN_PORT": str(admin)})
        # ... and fails when nothing listens
        assert brun(container, *hc[1:], env={"BASTION_ADMIN_PORT": str(free_port())}, check=False).returncode != 0
        # SIGHUP reloads the mounted config
        gw = _serving_pid(proc.pid)
        doc = {"Content-Type": "application/json", "Host": "localhost"}  # (the CRS scores a bare IP Host)
        body = json.dumps({"note": "x" * 90}).encode()
        r = raw_request(port, "POST", "/echo", doc, body)
        assert r.status == 200, r.body
        (conf / "bastion.yaml").write_text(text.replace("max_bytes: 1048576", "max_bytes: 10"))
        os.kill(gw, signal.SIGHUP)
        deadline = time.time() + 30
        while "bastion_config_version 2.0" not in raw_request(admin, "GET", "/metrics").body.decode():
            assert time.time() < deadline, "no reload after SIGHUP:\n" + "".join(output)
            time.sleep(0.3)
        r = raw_request(port, "POST", "/echo", doc, body)
        assert r.status == 413, r.body
        # SIGTERM drains: a request in flight finishes, then the process exits
        slow: list[int] = []
        before = SLOW_STARTED[0]
        t = threading.Thread(target=lambda: slow.append(raw_request(port, "GET", "/slow?s=2", timeout=60).status))
        t.start()
        wait_for(lambda: SLOW_STARTED[0] > before, what="the slow request to reach the upstream")
        os.kill(gw, signal.SIGTERM)
        t.join(30)
        assert slow == [200], slow  # answered, not cut off
        assert proc.wait(60) == 0, "".join(output)
        reader.join(5)
        assert "shutting down: finishing in-flight requests" in "".join(output)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(conf, ignore_errors=True)
