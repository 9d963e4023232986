"""RELAY_REDIS_MIN_REPLICAS: a 2xx only once that many replicas hold the write (Redis WAIT); else 503
saying the records are kept, and a retry with the same Idempotency-Key is recognised."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from flask.testing import FlaskClient

from relay import store
from tests.helpers import WRITE_KEY
from tests.processes import RedisServer, wait_for

POSTBACK = "/postback/v3/event/db/events"
EVENT = {"external_id": "replicated-1", "name": "signup"}
TD = {"X-TD-Write-Key": WRITE_KEY}
LANE = store.keys("default").lane_list("track")  # one track shard in-process (conftest)


def replica_of(own_redis: Callable[..., RedisServer], primary: RedisServer) -> RedisServer:
    """A replica of `primary`, once it has synced."""
    replica = own_redis("--replicaof", "127.0.0.1", str(primary.port))
    client = redis.Redis(port=replica.port)
    wait_for(lambda: client.info("replication")["master_link_status"] == "up", 20, "the replica to sync")
    return replica


@pytest.fixture
def primary(own_redis: Callable[..., RedisServer]) -> RedisServer:
    """A Redis of the test's own, the relay's primary."""
    return own_redis()


@pytest.fixture
def waiting(build_client: Callable[..., FlaskClient], primary: RedisServer) -> FlaskClient:
    """The relay on that primary, waiting 200 ms for one replica before each 2xx."""
    return build_client(REDIS_URL=primary.url, RELAY_REDIS_MIN_REPLICAS="1", RELAY_REDIS_WAIT_MS="200")


def test_answer_waits_for_a_replica_that_then_holds_the_record(
    waiting: FlaskClient, primary: RedisServer, own_redis: Callable[..., RedisServer]
) -> None:
    """With one replica asked for and present, the postback answers 200 and the replica has the record."""
    replica = replica_of(own_redis, primary)
    answer = waiting.post(POSTBACK, json=EVENT, headers=TD)
    assert answer.status_code == 200, answer.get_json()
    # WAIT returned: the replica acknowledged the write, so it holds the record now (no polling).
    held = redis.Redis(port=replica.port).lrange(LANE, 0, -1)
    assert [json.loads(item)["rec"]["_id"] for item in held] == [{"external_id": "replicated-1"}]


def test_no_replica_answers_503_that_says_the_record_is_kept(
    waiting: FlaskClient, primary: RedisServer
) -> None:
    """No replica within the wait: 503 with Retry-After, saying the records are stored and what a retry
    does; the record is in its lane (it will be delivered)."""
    answer = waiting.post(POSTBACK, json=EVENT, headers=TD)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    body = answer.get_json()
    assert body["errors"] == {"redis": "short of replicas", "replicas": {"wanted": 1, "confirmed": 0}}
    assert "kept and will be delivered" in body["message"]
    assert "Idempotency-Key" in body["message"]
    assert redis.Redis(port=primary.port).llen(LANE) == 1
    metrics = waiting.get("/metrics").get_data(as_text=True)
    assert 'relay_requests_not_replicated_total{route="events"} 1.0' in metrics


def test_a_retry_with_the_same_key_is_recognised_and_answered_once_replicated(
    waiting: FlaskClient, primary: RedisServer, own_redis: Callable[..., RedisServer]
) -> None:
    """503 for want of a replica, the caller retries with its Idempotency-Key: nothing is stored twice,
    and once a replica holds it the retry gets the 2xx."""
    headers = {**TD, "Idempotency-Key": "order-7"}
    assert waiting.post(POSTBACK, json=EVENT, headers=headers).status_code == 503
    assert waiting.post(POSTBACK, json=EVENT, headers=headers).status_code == 503
    replica_of(own_redis, primary)
    assert waiting.post(POSTBACK, json=EVENT, headers=headers).status_code == 200
    assert redis.Redis(port=primary.port).llen(LANE) == 1


def test_without_replicas_asked_for_no_wait_is_sent(
    build_client: Callable[..., FlaskClient], primary: RedisServer
) -> None:
    """The default (0): a primary without replicas answers 200, as before."""
    client = build_client(REDIS_URL=primary.url)
    assert client.post(POSTBACK, json=EVENT, headers=TD).status_code == 200
    assert redis.Redis(port=primary.port).info("commandstats").get("cmdstat_wait") is None


def test_readiness_fails_while_redis_is_short_of_replicas(
    waiting: FlaskClient, primary: RedisServer, own_redis: Callable[..., RedisServer]
) -> None:
    """/readyz asks what every postback asks: with no replica it answers 503 saying Redis is short of
    replicas (a load balancer stops sending postbacks that would all be refused); once a replica holds
    the probe's write, 200."""
    answer = waiting.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["errors"] == {"redis": "short of replicas (0 of 1)"}
    replica_of(own_redis, primary)
    answer = waiting.get("/readyz")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "ready"
