"""A managed Redis's way in (docs/operations.md, "Redis"): TLS with a client certificate and an ACL user,
through `rediss://user:password@host:port` and REDIS_SSL_CA_CERTS, REDIS_SSL_CERTFILE, REDIS_SSL_KEYFILE.
A real redis-server listens with TLS only on loopback, with certificates made here by `openssl`; the
web answers 2xx and the worker delivers to the Braze simulator."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from braze_sim.server import Simulator
from tests.helpers import WRITE_KEY
from tests.processes import free_port, running_stack, wait_for

USER, PASSWORD = "relay-app", "tls-test-password"
EVENTS = 5


def tls_redis_server() -> str | None:
    """A redis-server on PATH built with TLS (the first that knows `tls-port`), or None."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "redis-server"
        if not candidate.is_file():
            continue
        tried = subprocess.run(
            [str(candidate), "--port", "0", "--tls-port", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if "Bad directive" not in tried.stdout + tried.stderr:
            return str(candidate)
    return None


def openssl(*args: str, cwd: Path) -> None:
    """Run one openssl command in `cwd`."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-out", f"{name}.crt", *extra, cwd=folder)  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server taking only TLS connections with a client certificate, its default user off and
    one ACL user with a password; (its port, the certificates' folder)."""
    server = tls_redis_server()
    if server is None:
        pytest.skip("no redis-server on PATH is built with TLS (tls-port unknown)")
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make the test's certificates")
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    port = free_port()
    tls = ("--tls-port", str(port), "--tls-cert-file", "server.crt", "--tls-key-file", "server.key")
    clients = ("--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "yes")  # a client certificate required
    users = ("--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all", "--user", "default", "off")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            *tls,
            *clients,
            *users,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(certs),
        ],
        cwd=certs,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    admin = redis.Redis(
        port=port,
        username=USER,
        password=PASSWORD,
        ssl=True,
        ssl_ca_certs=str(certs / "ca.crt"),
        ssl_certfile=str(certs / "client.crt"),
        ssl_keyfile=str(certs / "client.key"),
        socket_connect_timeout=1,
    )

    def answers() -> bool:
        try:
            return bool(admin.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(answers, 20, "the TLS redis-server")
        yield port, certs
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.e2e
def test_relay_stores_and_delivers_through_tls_with_an_acl_user(
    tls_redis: tuple[int, Path], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """rediss:// with an ACL user, the CA and a client certificate: 2xx at the edge, every event in Braze."""
    port, certs = tls_redis
    settings = {
        "REDIS_SSL_CA_CERTS": str(certs / "ca.crt"),
        "REDIS_SSL_CERTFILE": str(certs / "client.crt"),
        "REDIS_SSL_KEYFILE": str(certs / "client.key"),
    }
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0"
    with running_stack(tmp_path, routes_file, braze, url, **settings) as (procs, base):
        procs.start("worker")
        for seq in range(EVENTS):
            answer = requests.post(
                f"{base}/postback/v3/event/db/events",
                json={"external_id": "tls-user", "name": "over-tls", "seq": seq},
                headers={"X-TD-Write-Key": WRITE_KEY},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text

        def delivered() -> set[int]:
            profile = braze.state.profile("tls-user") or {}
            return {event["properties"]["seq"] for event in profile.get("events", [])}

        wait_for(lambda: delivered() == set(range(EVENTS)), 30, "every event in Braze")
        assert all(proc.poll() is None for proc in procs.running)


def test_without_the_client_certificate_the_tls_redis_refuses(tls_redis: tuple[int, Path]) -> None:
    """The server really asks for the client certificate (so the test above proves the settings reach
    redis-py): the same URL without REDIS_SSL_CERTFILE cannot connect."""
    port, certs = tls_redis
    client = redis.Redis.from_url(
        f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0", ssl_ca_certs=str(certs / "ca.crt"), socket_timeout=5
    )
    with pytest.raises(redis.ConnectionError):
        client.ping()
