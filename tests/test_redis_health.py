"""What a Redis error means, whether Redis takes writes, how full it is, and what the web says about it.

Every error here is a real redis-server's answer (on a port of the test's own): full under
noeviction, a replica, busy with a script, a wrong type, a script error, an unknown script, no
server at all. Waiting cures the first three (the workers ride them out); not the others. The web
answers a refused store 503 with the reason, never 500, and its /readyz says Redis is filling up
before it is full, and answers 503 once Redis refuses writes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from braze_sim.server import Simulator
from relay import redis_health
from relay.config import load_settings
from tests.helpers import WRITE_KEY, create_app_for, relay_environment
from tests.processes import RedisServer, free_port, wait_for

EVENT = {"external_id": "u1", "name": "signup"}
TD = {"X-TD-Write-Key": WRITE_KEY}


def refusal(command: Callable[[], object]) -> redis.RedisError:
    """The error Redis answers the command with (it must answer one)."""
    with pytest.raises(redis.RedisError) as caught:
        command()
    return caught.value


def in_transaction(operator: redis.Redis, *command: object) -> Callable[[], object]:
    """The command inside MULTI/EXEC, as the relay's stores and commits send theirs."""

    def run() -> object:
        with operator.pipeline(transaction=True) as pipe:
            pipe.execute_command(*command)
            return pipe.execute()

    return run


@pytest.fixture
def server(own_redis: Callable[..., RedisServer]) -> RedisServer:
    """A redis-server of the test's own, answering BUSY 100 ms into a long script."""
    return own_redis("--lua-time-limit", "100")


@pytest.fixture
def operator(server: RedisServer) -> Iterator[redis.Redis]:
    """The test's own client of it (as an operator's redis-cli); maxmemory back to none afterwards."""
    found = redis.Redis(port=server.port)
    yield found
    found.config_set("maxmemory", 0)


def test_a_full_redis_is_waited_for(operator: redis.Redis) -> None:
    """OOM, from a command, a transaction or a script, is a refusal that waiting cures."""
    operator.config_set("maxmemory", 1)
    for command in (
        lambda: operator.set("k", "v"),
        in_transaction(operator, "SET", "k", "v"),
        lambda: operator.eval("return redis.call('SET', KEYS[1], 'v')", 1, "k"),
        lambda: redis_health.take_write(operator),
    ):
        error = refusal(command)
        assert redis_health.code(error) == "OOM"
        assert redis_health.passing(error)
        assert redis_health.describe(error) == "out of memory (maxmemory reached)"
    operator.config_set("maxmemory", 0)
    redis_health.take_write(operator)  # takes writes again


def test_a_busy_redis_is_waited_for(operator: redis.Redis, server: RedisServer) -> None:
    """BUSY, which redis-py knows no class for, read from the answer, in a transaction too."""

    def answers_busy() -> bool:
        try:
            operator.get("k")
        except redis.ResponseError as exc:
            return redis_health.code(exc) == "BUSY"
        return False

    spinning = subprocess.Popen(["redis-cli", "-p", str(server.port), "EVAL", "while true do end", "0"])
    try:
        wait_for(answers_busy, 10, "Redis to answer BUSY")
        for command in (lambda: operator.get("k"), in_transaction(operator, "SET", "k", "v")):
            error = refusal(command)
            assert (redis_health.code(error), redis_health.passing(error)) == ("BUSY", True)
    finally:
        operator.script_kill()
        spinning.wait(timeout=10)


def test_a_replica_is_waited_for(operator: redis.Redis, own_redis: Callable[..., RedisServer]) -> None:
    """READONLY: the relay's Redis became a replica (a failover); reads still answer."""
    primary = own_redis()
    operator.replicaof("127.0.0.1", primary.port)
    wait_for(lambda: operator.info("replication").get("master_link_status") == "up", 30, "the replica")
    error = refusal(lambda: redis_health.take_write(operator))
    assert (redis_health.code(error), redis_health.passing(error)) == ("READONLY", True)
    assert operator.ping()
    operator.replicaof("NO", "ONE")


def test_no_server_is_waited_for() -> None:
    """Nothing listening: unreachable, waited for, and the words name no address."""
    error = refusal(redis.Redis(port=free_port(), socket_connect_timeout=1, retry=None).ping)
    assert redis_health.passing(error)
    assert redis_health.describe(error) == "unreachable"
    assert "127.0.0.1" not in redis_health.code(error)


def test_commands_that_cannot_succeed_are_not_waited_for(operator: redis.Redis) -> None:
    """A wrong type, a script error, an unknown script: waiting does not help, and the code says which."""
    operator.set("a-string", "v")
    cases = {
        "WRONGTYPE": lambda: operator.lpush("a-string", "x"),
        "ERR": lambda: operator.eval("return redis.call('NO-SUCH-COMMAND')", 0),
        "NOSCRIPT": lambda: operator.evalsha("0" * 40, 0),
    }
    for code, command in cases.items():
        error = refusal(command)
        assert (redis_health.code(error), redis_health.passing(error)) == (code, False)
    error = refusal(in_transaction(operator, "LPUSH", "a-string", "secret-value"))
    assert redis_health.code(error) == "WRONGTYPE"  # the pipeline's note names the command, not the code
    assert "secret-value" not in redis_health.describe(error)


def test_memory_warns_from_its_share_of_maxmemory(operator: redis.Redis) -> None:
    """Used over maxmemory, and a warning from the threshold on; none without a maxmemory."""
    assert redis_health.Memory(used=79, limit=100).warning(0.8) is None
    warning = redis_health.Memory(used=80, limit=100).warning(0.8)
    assert warning is not None and "80%" in warning and "RELAY_REDIS_MEMORY_WARN" in warning
    assert redis_health.Memory(used=10**9, limit=0).warning(0.8) is None
    found = redis_health.memory(operator)
    assert found is not None and found.used > 0 and found.ratio is None
    operator.config_set("maxmemory", found.used * 4)
    again = redis_health.memory(operator)
    assert again is not None and again.ratio is not None and 0.2 < again.ratio < 0.3


@pytest.fixture
def web(
    server: RedisServer, braze: Simulator, routes_file: Path, monkeypatch: pytest.MonkeyPatch
) -> FlaskClient:
    """The relay's app on that Redis, as an operator would run it."""
    for name, value in relay_environment(server.url, braze.url, routes_file).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RELAY_REDIS_MEMORY_WARN", raising=False)
    return create_app_for(load_settings()).test_client()


def gauges(web: FlaskClient) -> dict[str, float]:
    """The memory gauges of /metrics."""
    text = web.get("/metrics").get_data(as_text=True)
    return {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("relay_redis_memory")
    }


def test_the_web_says_redis_is_filling_up_before_it_is_full(web: FlaskClient, operator: redis.Redis) -> None:
    """Below RELAY_REDIS_MEMORY_WARN nothing is said; past it /readyz stays 200 and names the warning,
    and /metrics flags it; full, /readyz answers 503 and a store 503, both naming the reason."""

    def used() -> int:
        return int(operator.info("memory")["used_memory"])

    operator.config_set("maxmemory", used() * 4)
    ready = web.get("/readyz")
    assert ready.status_code == 200 and "warnings" not in ready.get_json()
    assert gauges(web)["relay_redis_memory_warning"] == 0

    operator.config_set("maxmemory", int(used() / 0.9))  # about 90% used: past the 80% of the default
    ready = web.get("/readyz")
    assert ready.status_code == 200, ready.get_data(as_text=True)
    assert "of its maxmemory" in ready.get_json()["warnings"]["redis_memory"]
    found = gauges(web)
    assert found["relay_redis_memory_warning"] == 1 and 0.8 < found["relay_redis_memory_used_ratio"] < 1
    assert web.post("/postback/v3/event/db/events", json=EVENT, headers=TD).status_code == 200

    operator.config_set("maxmemory", 1)
    stored = operator.dbsize()
    refused = web.post("/postback/v3/event/db/events", json=EVENT, headers=TD)
    assert refused.status_code == 503
    assert "out of memory" in refused.get_json()["message"]
    assert refused.get_json()["errors"] == {"redis": "out of memory (maxmemory reached)"}
    ready = web.get("/readyz")
    assert ready.status_code == 503 and "out of memory" in ready.get_json()["message"]
    assert operator.dbsize() == stored


def test_every_kind_of_store_a_full_redis_refuses_is_a_503(web: FlaskClient, operator: redis.Redis) -> None:
    """Ingestion with an idempotency key, consent (audit trail), an export with rows set aside: 503."""
    operator.config_set("maxmemory", 1)
    consent = {"external_id": "u1", "email_subscribe": "opted_in"}
    answers = [
        web.post("/db/events", json={"records": [EVENT]}, headers={**TD, "Idempotency-Key": "k-1"}),
        web.post("/db/consent", json={"records": [consent]}, headers=TD),
        web.post("/db/profiles_skip", json={"records": [{"external_id": "u1"}]}, headers=TD),
    ]
    for answer in answers:
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.get_json()["errors"] == {"redis": "out of memory (maxmemory reached)"}
