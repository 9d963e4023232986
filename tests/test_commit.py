"""The watched commit (handlers/commit.py) on the real Redis: a chunk's endings in one transaction, only while
its job holds the lane's lease.

Each test stores real envelopes (the edge's schemas) in a lane, decides their endings in a `Ledger` as a
drain job's requests would, commits, and reads what Redis then holds. A lease that changes between
WATCH and EXEC is made by a TCP relay between the commit's client and Redis, which lets a new owner
take the lane just before the transaction reaches Redis.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from handlers.commit import Chunk, Flight, commit
from handlers.context import Context
from handlers.outcomes import Dead, Later
from relay import audit, deadletters, metrics
from relay.config import Delivery, Settings
from relay.envelope import Envelope, dumps, loads
from relay.lanes import Lane
from relay.modes import DeadReason
from tests.helpers import REDIS_URL, WORKSPACES, caught_up, envelopes

TRACK = Lane("default:track")
CONSENT = Lane("default:consent")
OWNER, OTHER = "owner-token", "other-token"
DELIVERY = Delivery()  # a worker's lease
DUE = 4_000_000_000.0  # when a retried record is due (far ahead: it stays in the retry set)
ROUTE = (("route", "unit"),)  # the metrics labels of the records `envelopes` makes


def events(count: int) -> list[Envelope]:
    """`count` custom events of different users, as the edge queues them."""
    return envelopes(
        "user_track",
        [{"external_id": f"u{n}", "name": "tap"} for n in range(count)],
        track_record_type="custom_events",
    )


def stored(client: redis.Redis, lane: Lane, envs: list[Envelope]) -> Chunk:
    """Store the records in the lane, take its lease for OWNER, and read them back as a drain job does."""
    with client.pipeline(transaction=True) as pipe:
        lane.append(pipe, [dumps(env) for env in envs])
        pipe.execute()
    assert lane.take_lease(client, OWNER, DELIVERY)
    return [(raw, loads(raw), False) for raw in lane.read(client, 0, len(envs))]


def snapshot(client: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key and its serialized value: equal snapshots, equal Redis."""
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def counted(client: redis.Redis) -> dict[metrics.Series, float]:
    """Every count of the default workspace."""
    return metrics.read(client, WORKSPACES)


@pytest.fixture
def ctx(settings: Settings, clean_redis: redis.Redis) -> Context:
    """The worker's context, as a worker process builds it, on the test's Redis."""
    return Context(settings, clean_redis)


def test_the_holders_commit_writes_every_ending(ctx: Context, clean_redis: redis.Redis) -> None:
    """Delivered, retried, dead-lettered and superseded records leave the list together, each written
    where its ending says, with their counts; the lease stays the job's."""
    envs = events(4)
    flight = Flight(stored(clean_redis, TRACK, envs))
    flight.ledger.delivered.add(envs[0]["id"])
    flight.ledger.postpone(envs[1]["id"], Later(DUE, "Braze answered 503"))
    flight.ledger.fail(envs[2]["id"], Dead(DeadReason.BRAZE_REJECTED, 400, "bad item"))
    flight.tally.calls[("/users/track", "201")] += 2
    assert commit(ctx, TRACK, OWNER, flight, threading.Lock())
    assert clean_redis.llen(TRACK.list_key) == 0
    ((raw, due),) = clean_redis.zrange(TRACK.retry_key, 0, -1, withscores=True)
    retried = loads(raw)
    assert (retried["id"], retried["n"], retried["why"], due) == (envs[1]["id"], 1, "Braze answered 503", DUE)
    assert "first" in retried
    dead = deadletters.get(clean_redis, envs[2]["id"], WORKSPACES)
    assert dead is not None
    assert (dead["reason"], dead["status"], dead["message"]) == ("braze_rejected", 400, "bad item")
    expected = {
        ("relay_records_delivered", ROUTE): 1,
        ("relay_records_superseded", ROUTE): 1,
        ("relay_retries", (("reason", "Braze answered 503"), *ROUTE)): 1,
        ("relay_records_dead_lettered", (("reason", "braze_rejected"), *ROUTE)): 1,
        ("relay_braze_requests", (("endpoint", "/users/track"), ("status", "201"))): 2,
    }
    found = counted(clean_redis)
    assert {series: found.get(series) for series in expected} == expected
    assert TRACK.holds(clean_redis, OWNER)


def test_records_taken_from_the_retry_set_leave_it(ctx: Context, clean_redis: redis.Redis) -> None:
    """A retry delivered leaves the retry set, a retry failing again is scheduled anew; the list is left."""
    waiting, *retries = events(3)
    stored(clean_redis, TRACK, [waiting])
    clean_redis.zadd(TRACK.retry_key, {dumps(env): 1.0 for env in retries})
    chunk = [(raw, loads(raw), True) for raw in clean_redis.zrange(TRACK.retry_key, 0, -1)]
    flight = Flight(chunk)
    flight.ledger.delivered.add(chunk[0][1]["id"])
    flight.ledger.postpone(chunk[1][1]["id"], Later(DUE, "Braze answered 502"))
    assert commit(ctx, TRACK, OWNER, flight, threading.Lock())
    assert [loads(raw)["id"] for raw in clean_redis.lrange(TRACK.list_key, 0, -1)] == [waiting["id"]]
    ((raw, due),) = clean_redis.zrange(TRACK.retry_key, 0, -1, withscores=True)
    assert (loads(raw)["id"], loads(raw)["n"], due) == (chunk[1][1]["id"], 1, DUE)


def test_retries_that_run_out_are_dead_lettered(ctx: Context, clean_redis: redis.Redis) -> None:
    """A record whose last attempt fails again is dead-lettered (retries_exhausted), not retried."""
    (env,) = events(1)
    env["n"] = ctx.settings.delivery.max_attempts - 1
    flight = Flight(stored(clean_redis, TRACK, [env]))
    flight.ledger.postpone(env["id"], Later(DUE, "Braze answered 503"))
    assert commit(ctx, TRACK, OWNER, flight, threading.Lock())
    assert clean_redis.zcard(TRACK.retry_key) == 0
    dead = deadletters.get(clean_redis, env["id"], WORKSPACES)
    assert dead is not None and (dead["reason"], dead["attempts"]) == ("retries_exhausted", env["n"] + 1)


def test_a_consent_changes_endings_are_in_its_users_trail(
    ctx: Context, clean_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A consent change delivered is `confirmed`, one dead-lettered is `dead_lettered` with its reason,
    and the dead letter is logged without the record's identifier."""
    changes = envelopes(
        "user_subscription",
        [
            {"external_id": user, "subscription_group_id": "g1", "subscription_state": "unsubscribed"}
            for user in ("ann", "bob")
        ],
    )
    flight = Flight(stored(clean_redis, CONSENT, changes))
    flight.ledger.delivered.add(changes[0]["id"])
    flight.ledger.fail(changes[1]["id"], Dead(DeadReason.BRAZE_REJECTED, 401, "Invalid API Key"))
    with caplog.at_level(logging.INFO, logger="handlers.commit"):
        assert commit(ctx, CONSENT, OWNER, flight, threading.Lock())
    ann = audit.history(clean_redis, "default", {"external_id": "ann"})
    bob = audit.history(clean_redis, "default", {"external_id": "bob"})
    assert [event["event"] for event in ann] == ["confirmed"]
    assert [(event["event"], event["reason"], event["status"]) for event in bob] == [
        ("dead_lettered", "braze_rejected", 401)
    ]
    (line,) = [record for record in caplog.records if record.getMessage() == "dead-lettered"]
    assert (line.record, line.reason, line.status) == (changes[1]["id"], "braze_rejected", 401)  # type: ignore[attr-defined]
    assert "bob" not in caplog.text


def test_endings_are_written_in_one_transaction(
    ctx: Context, clean_redis: redis.Redis, watched: list[str]
) -> None:
    """The commit reads the lease under WATCH, then writes everything between one MULTI and its EXEC."""
    envs = events(3)
    flight = Flight(stored(clean_redis, TRACK, envs))
    flight.ledger.delivered.add(envs[0]["id"])
    flight.ledger.postpone(envs[1]["id"], Later(DUE, "Braze answered 503"))
    flight.ledger.fail(envs[2]["id"], Dead(DeadReason.BRAZE_REJECTED, 400, "bad item"))
    caught_up(clean_redis, watched, "before")
    watched.clear()
    assert commit(ctx, TRACK, OWNER, flight, threading.Lock())
    caught_up(clean_redis, watched, "after")
    names = [line.split()[0].upper() for line in watched]
    assert names[:3] == ["WATCH", "GET", "MULTI"]
    exec_at = names.index("EXEC")
    assert names.count("MULTI") == names.count("EXEC") == 1
    inside = set(names[3:exec_at])
    assert {"LTRIM", "ZADD", "HINCRBY", "EVAL"} <= inside  # trim, retry, counts, the dead letter
    assert set(names[exec_at + 1 :]) == {"ECHO"}, "a command of the commit after its transaction"


def test_a_commit_by_a_token_that_lost_the_lease_writes_nothing(
    ctx: Context, clean_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Another owner holds the lane (the job's lease ran out): the commit says so and Redis is as it was."""
    envs = events(2)
    flight = Flight(stored(clean_redis, TRACK, envs))
    flight.ledger.delivered.add(envs[0]["id"])
    flight.ledger.fail(envs[1]["id"], Dead(DeadReason.BRAZE_REJECTED, 400, "bad item"))
    clean_redis.set(TRACK.lease_key, OTHER)
    before = snapshot(clean_redis)
    assert not commit(ctx, TRACK, OWNER, flight, threading.Lock())
    assert snapshot(clean_redis) == before
    assert "lease lost before commit; the next owner delivers again" in caplog.text


class Interposer:
    """A TCP relay from a Redis client to the real Redis that calls `before_multi` once, when the client's
    transaction (MULTI ... EXEC) is on its way, before Redis sees any of it."""

    def __init__(self, upstream: tuple[str, int], before_multi: Callable[[], None]) -> None:
        self.upstream, self.before_multi = upstream, before_multi
        self.fired = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        """Relay every connection until the server socket closes."""
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self.pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, False), daemon=True).start()

    def pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        """Copy bytes one way; on the client's side, run the hook before the first MULTI goes on."""
        try:
            while data := source.recv(65536):
                if from_client and b"\r\nMULTI\r\n" in data and not self.fired.is_set():
                    self.before_multi()
                    self.fired.set()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        """Stop accepting (relayed connections end with their client)."""
        self.server.close()


@pytest.fixture
def interposed(clean_redis: redis.Redis) -> Iterator[Callable[[Callable[[], None]], redis.Redis]]:
    """A client whose transactions pass a hook first (`interposed(hook)`); closed after the test."""
    made: list[tuple[Interposer, redis.Redis]] = []
    address = redis.Redis.from_url(REDIS_URL).connection_pool.connection_kwargs
    db = address.get("db", 0)

    def make(hook: Callable[[], None]) -> redis.Redis:
        relay = Interposer((address.get("host", "127.0.0.1"), address.get("port", 6379)), hook)
        client = redis.Redis(host="127.0.0.1", port=relay.port, db=db)
        made.append((relay, client))
        return client

    yield make
    for relay, client in made:
        client.close()
        relay.close()


def test_a_lease_taken_during_the_commit_aborts_it(
    settings: Settings,
    clean_redis: redis.Redis,
    interposed: Callable[[Callable[[], None]], redis.Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The lease changes after the commit checked it and before its transaction runs: WATCH makes Redis
    refuse the transaction, the commit says so, and nothing of the chunk is written."""
    envs = events(2)
    flight = Flight(stored(clean_redis, TRACK, envs))
    flight.ledger.delivered.add(envs[0]["id"])
    flight.ledger.fail(envs[1]["id"], Dead(DeadReason.BRAZE_REJECTED, 400, "bad item"))
    before: dict[bytes, bytes | None] = {}

    def new_owner() -> None:
        clean_redis.set(TRACK.lease_key, OTHER)
        before.update(snapshot(clean_redis))

    ctx = Context(settings, interposed(new_owner))
    assert not commit(ctx, TRACK, OWNER, flight, threading.Lock())
    assert before, "the transaction never reached Redis"
    assert snapshot(clean_redis) == before
    assert "lease changed during commit; the next owner delivers again" in caplog.text


def test_an_empty_ledger_supersedes_and_still_trims(ctx: Context, clean_redis: redis.Redis) -> None:
    """Records none of whose items was sent (every value already newer in Braze) end superseded, counted."""
    flight = Flight(stored(clean_redis, TRACK, events(2)))
    assert commit(ctx, TRACK, OWNER, flight, threading.Lock())
    assert clean_redis.llen(TRACK.list_key) == 0
    assert counted(clean_redis)[("relay_records_superseded", ROUTE)] == 2
