"""The lane protocol (relay/lanes.py) on the real Redis: a lane's name, its records, its one lease, waking it.

Every test drives `Lane` itself and reads what Redis then holds: the list, the retry set, the lease,
the workspace's set of lanes, and the drain jobs on RQ's real queues.
"""

from __future__ import annotations

import zlib

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from relay import budgets, lanes, store
from relay.config import Delivery
from relay.lanes import DRAIN_JOB, PUSH_CHUNK, Lane
from relay.modes import Kind, LaneFamily
from relay.routes import Route, user_key

DELIVERY = Delivery(lease_s=3.0)
TRACK = Lane("default:track.0")
CONSENT = Lane("default:consent")
OWNER, OTHER = "owner-token", "other-token"
# A route's claim on its budgets, which every push carries (relay/budgets.py has its own tests).
HOLD = budgets.Hold("default", "r", budgets.DEFAULTS, 1, 1, 0.0)
ANN = {"external_id": "ann"}


def records(count: int, start: int = 0) -> list[str]:
    """`count` distinct stored records (the lane does not look inside them)."""
    return [f'{{"n":{n}}}' for n in range(start, start + count)]


def in_list(client: redis.Redis, lane: Lane) -> list[str]:
    """What the lane's list holds, oldest first."""
    return [raw.decode() for raw in client.lrange(lane.list_key, 0, -1)]


def drain_jobs(client: redis.Redis, queue: str) -> list[tuple[str, ...]]:
    """The (lane, token) of every drain job waiting on an RQ queue."""
    jobs = Queue(queue, connection=client, serializer=JSONSerializer).jobs
    assert all(job.func_name == DRAIN_JOB for job in jobs)
    return [tuple(job.args) for job in jobs]


# --- names -----------------------------------------------------------------------------------


def test_a_users_track_records_share_one_shard() -> None:
    """Track records split by user into shards: one user always in the same shard, by a CRC of the user."""
    shard = zlib.crc32(user_key(ANN).encode()) % 4
    assert Lane.of("default", Kind.EVENTS, ANN, 4) == Lane(f"default:track.{shard}")
    assert Lane.of("default", Kind.PURCHASES, ANN, 4) == Lane.of("default", Kind.ATTRIBUTES, ANN, 4)
    assert Lane.track_of("default", ANN, 4) == Lane.of("default", Kind.EVENTS, ANN, 4)
    users = {Lane.of("default", Kind.EVENTS, {"external_id": f"u{n}"}, 4) for n in range(200)}
    assert users == {Lane(f"default:track.{shard}") for shard in range(4)}


@pytest.mark.parametrize(
    ("kind", "ident", "shards", "name"),
    [
        (Kind.EVENTS, ANN, 1, "ws:track"),
        (Kind.EVENTS, None, 4, "ws:track"),
        (Kind.CONSENT, ANN, 4, "ws:consent"),
        (Kind.ALIAS, None, 4, "ws:alias"),
        (Kind.IDENTIFY, ANN, 4, "ws:identify"),
        (Kind.DELETE, ANN, 4, "ws:delete"),
    ],
)
def test_other_families_and_one_shard_are_one_lane(
    kind: Kind, ident: dict[str, str] | None, shards: int, name: str
) -> None:
    """Only track lanes shard, and only with more than one shard and an identifier."""
    assert Lane.of("ws", kind, ident, shards) == Lane(name)


def test_a_routes_lanes_and_the_configured_ones() -> None:
    """A track route may use every shard; the configured lanes are each lane once, sorted."""
    events = Route("events", "user_track", track_record_type="custom_events")
    purchases = Route("purchases", "user_track", track_record_type="purchases")
    consent = Route("consent", "user_subscription")
    assert Lane.of_route(events, 3) == [Lane(f"default:track.{shard}") for shard in range(3)]
    assert Lane.of_route(events, 1) == [Lane("default:track")]
    assert Lane.of_route(consent, 3) == [CONSENT]
    assert Lane.configured([consent, events, purchases], 2) == [
        CONSENT,
        Lane("default:track.0"),
        Lane("default:track.1"),
    ]


def test_a_lanes_name_parts_and_keys() -> None:
    """Workspace, part and family come from the name; every key is under the workspace's hash tag."""
    lane = Lane("shop-eu:track.1")
    assert (lane.workspace, lane.part, lane.family) == ("shop-eu", "track.1", LaneFamily.TRACK)
    assert str(lane) == "shop-eu:track.1"
    assert lane.keys == store.keys("shop-eu")
    for key in (lane.list_key, lane.retry_key, lane.lease_key):
        assert key.startswith("relay:{shop-eu}:") and key.endswith(":track.1")
    assert len({lane.list_key, lane.retry_key, lane.lease_key}) == 3


def test_consent_drain_jobs_go_on_their_own_queue() -> None:
    """Consent lanes' drain jobs go on the consent queue (never behind bulk); every other lane's on bulk."""
    assert CONSENT.rq_queue == store.QUEUE_CONSENT
    for name in ("default:track", "default:track.3", "default:alias", "default:identify", "default:delete"):
        assert Lane(name).rq_queue == store.QUEUE_BULK


# --- storing records -----------------------------------------------------------------------------


def test_push_stores_counts_and_takes_the_free_lease(clean_redis: redis.Redis) -> None:
    """The first push stores its records in order, counts them (and their route's queued records) and
    takes the free lease; the next push only adds records: the lease stays its first owner's."""
    assert TRACK.push(clean_redis, records(3), counter="accepted", hold=HOLD, token=OWNER, delivery=DELIVERY)
    assert not TRACK.push(
        clean_redis, records(2, 3), counter="accepted", hold=HOLD, token=OTHER, delivery=DELIVERY
    )
    assert in_list(clean_redis, TRACK) == records(5)
    assert clean_redis.hget(TRACK.keys.metrics, "accepted") == b"5"
    assert clean_redis.hget(TRACK.keys.held, "r|records") == b"5"
    assert clean_redis.get(TRACK.lease_key) == OWNER.encode()
    assert 0 < clean_redis.pttl(TRACK.lease_key) <= DELIVERY.lease_ms
    assert clean_redis.smembers(TRACK.keys.lanes) == {TRACK.name.encode()}


def test_push_runs_through_the_runner_it_is_given(clean_redis: redis.Redis) -> None:
    """With a runner (the edge's group commit), the script call is the runner's to make."""
    calls: list[tuple[list[str], int]] = []

    def runner(script: object, keys: list[str], args: list[object]) -> object:
        calls.append((list(keys), len(args)))
        return script(keys=keys, args=args)  # type: ignore[operator]

    assert TRACK.push(
        clean_redis, records(2), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY, runner=runner
    )
    declared = [TRACK.list_key, TRACK.keys.metrics, TRACK.lease_key, TRACK.keys.lanes, TRACK.keys.held]
    assert calls == [([*declared, HOLD.minute_key], 10 + 2)]
    assert in_list(clean_redis, TRACK) == records(2)


def test_append_queues_any_number_of_records_without_the_lease(clean_redis: redis.Redis) -> None:
    """Appending on a transaction stores every record in order (in pushes of PUSH_CHUNK) and remembers
    the lane, but takes no lease: waking is the caller's."""
    many = records(2 * PUSH_CHUNK + 7)
    with clean_redis.pipeline(transaction=True) as pipe:
        TRACK.append(pipe, many)
        *lengths, added = pipe.execute()
    assert (lengths, added) == ([PUSH_CHUNK, 2 * PUSH_CHUNK, len(many)], 1)  # three pushes, one SADD
    assert in_list(clean_redis, TRACK) == many
    assert clean_redis.smembers(TRACK.keys.lanes) == {TRACK.name.encode()}
    assert not clean_redis.exists(TRACK.lease_key)


def test_known_lanes_are_the_remembered_and_the_configured(clean_redis: redis.Redis) -> None:
    """Lanes that ever held records are known from Redis, per workspace, beside the configured ones."""
    Lane("eu:alias").push(clean_redis, records(1), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    TRACK.push(clean_redis, records(1), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    store.register_workspaces(clean_redis, ["default", "eu"])
    assert Lane.in_workspaces(clean_redis, ["default"]) == [TRACK]
    assert Lane.in_workspaces(clean_redis, ["default", "eu"]) == [TRACK, Lane("eu:alias")]
    assert Lane.in_workspaces(clean_redis, []) == []
    assert Lane.known(clean_redis, [CONSENT]) == [CONSENT, TRACK, Lane("eu:alias")]


# --- reading and settling records ---------------------------------------------------------------


def test_look_sees_due_retries_the_length_and_one_record(clean_redis: redis.Redis) -> None:
    """One look: up to `due` retries due by `now` (oldest due first), the list's length, its record at
    `offset` (None past the end)."""
    TRACK.push(clean_redis, records(4), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    clean_redis.zadd(TRACK.retry_key, {"late": 300.0, "first": 100.0, "second": 200.0})
    assert TRACK.look(clean_redis, 1, 5, 250.0) == ([b"first", b"second"], 4, records(4)[1].encode())
    assert TRACK.look(clean_redis, 4, 1, 1000.0) == ([b"first"], 4, None)


def test_read_leaves_the_records_in_the_list(clean_redis: redis.Redis) -> None:
    """Reading takes `count` records from `offset`; they stay until a commit trims them."""
    TRACK.push(clean_redis, records(5), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    assert [raw.decode() for raw in TRACK.read(clean_redis, 1, 3)] == records(4)[1:4]
    assert [raw.decode() for raw in TRACK.read(clean_redis, 4, 10)] == records(5)[4:]
    assert in_list(clean_redis, TRACK) == records(5)


def test_the_holder_settles_and_schedules_in_one_transaction(clean_redis: redis.Redis) -> None:
    """Watching as the holder, a transaction trims the committed head, removes the retries it took and
    schedules another attempt."""
    TRACK.push(clean_redis, records(5), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    clean_redis.zadd(TRACK.retry_key, {"taken": 1.0, "other": 2.0})
    with clean_redis.pipeline(transaction=True) as pipe:
        assert TRACK.watch(pipe, OWNER)
        pipe.multi()
        TRACK.settle(pipe, 3, [b"taken"])
        TRACK.schedule(pipe, records(1)[0], 500.0)
        pipe.execute()
    assert in_list(clean_redis, TRACK) == records(5)[3:]
    assert clean_redis.zrange(TRACK.retry_key, 0, -1, withscores=True) == [
        (b"other", 2.0),
        (records(1)[0].encode(), 500.0),
    ]


def test_settling_nothing_queues_nothing(clean_redis: redis.Redis) -> None:
    """A chunk of no list records and no retries adds no command to the transaction."""
    with clean_redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        TRACK.settle(pipe, 0, [])
        assert pipe.execute() == []


def test_watch_says_whether_the_token_holds_the_lease(clean_redis: redis.Redis) -> None:
    """Watching tells the holder from anyone else, and from no holder at all."""
    with clean_redis.pipeline(transaction=True) as pipe:
        assert not TRACK.watch(pipe, OWNER)
        pipe.reset()
    TRACK.take_lease(clean_redis, OWNER, DELIVERY)
    with clean_redis.pipeline(transaction=True) as pipe:
        assert TRACK.watch(pipe, OWNER)
        pipe.reset()
    with clean_redis.pipeline(transaction=True) as pipe:
        assert not TRACK.watch(pipe, OTHER)


def test_a_lease_taken_after_watch_aborts_the_transaction(clean_redis: redis.Redis) -> None:
    """If another owner takes the lease between WATCH and EXEC, the transaction writes nothing."""
    TRACK.push(clean_redis, records(3), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    with clean_redis.pipeline(transaction=True) as pipe:
        assert TRACK.watch(pipe, OWNER)
        clean_redis.set(TRACK.lease_key, OTHER)  # the lease ran out and a new owner took the lane
        pipe.multi()
        TRACK.settle(pipe, 3, [])
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert in_list(clean_redis, TRACK) == records(3)


# --- the lease -------------------------------------------------------------------------------------


def test_only_one_can_take_the_lease_and_it_expires(clean_redis: redis.Redis) -> None:
    """Taking is SET NX with the lease's expiry: a second taker gets nothing; on a pipeline it is queued."""
    assert TRACK.take_lease(clean_redis, OWNER, DELIVERY)
    assert not TRACK.take_lease(clean_redis, OTHER, DELIVERY)
    assert clean_redis.get(TRACK.lease_key) == OWNER.encode()
    assert 0 < clean_redis.pttl(TRACK.lease_key) <= DELIVERY.lease_ms
    with clean_redis.pipeline(transaction=True) as pipe:
        TRACK.take_lease(pipe, OTHER, DELIVERY)
        CONSENT.take_lease(pipe, OTHER, DELIVERY)
        assert pipe.execute() == [None, True]


def test_only_the_holder_renews_confirms_or_holds(clean_redis: redis.Redis) -> None:
    """Renewing restores the full expiry for the holder only; confirm and holds say who holds it."""
    TRACK.take_lease(clean_redis, OWNER, DELIVERY)
    clean_redis.pexpire(TRACK.lease_key, 100)
    assert not TRACK.renew(clean_redis, OTHER, DELIVERY)
    assert clean_redis.pttl(TRACK.lease_key) <= 100
    assert TRACK.renew(clean_redis, OWNER, DELIVERY)
    assert clean_redis.pttl(TRACK.lease_key) > 100
    assert TRACK.confirm(clean_redis, OWNER, DELIVERY)
    assert not TRACK.confirm(clean_redis, OTHER, DELIVERY)
    assert TRACK.holds(clean_redis, OWNER)
    assert not TRACK.holds(clean_redis, OTHER)
    assert clean_redis.get(TRACK.lease_key) == OWNER.encode()


def test_no_lease_is_renewed_or_confirmed(clean_redis: redis.Redis) -> None:
    """A lease that ran out is not brought back by its old owner's renewal."""
    assert not TRACK.renew(clean_redis, OWNER, DELIVERY)
    assert not TRACK.confirm(clean_redis, OWNER, DELIVERY)
    assert not TRACK.holds(clean_redis, OWNER)
    assert not clean_redis.exists(TRACK.lease_key)


def test_release_of_an_empty_lane_frees_it(clean_redis: redis.Redis) -> None:
    """The owner of an empty lane gives the lease up (True); the lane can be taken again."""
    TRACK.take_lease(clean_redis, OWNER, DELIVERY)
    assert TRACK.release(clean_redis, OWNER, DELIVERY)
    assert not clean_redis.exists(TRACK.lease_key)


def test_release_with_records_waiting_keeps_the_lane(clean_redis: redis.Redis) -> None:
    """Records that came in before the release: the owner keeps the lane (False) and drains on."""
    TRACK.push(clean_redis, records(1), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    assert not TRACK.release(clean_redis, OWNER, DELIVERY)
    assert clean_redis.get(TRACK.lease_key) == OWNER.encode()


def test_release_never_frees_another_owners_lease(clean_redis: redis.Redis) -> None:
    """A former owner's release leaves the new owner's lease, with or without records waiting."""
    TRACK.take_lease(clean_redis, OTHER, DELIVERY)
    assert TRACK.release(clean_redis, OWNER, DELIVERY)
    TRACK.push(clean_redis, records(1), counter="c", hold=HOLD, token=OTHER, delivery=DELIVERY)
    assert TRACK.release(clean_redis, OWNER, DELIVERY)  # someone else holds it: not ours to keep
    assert clean_redis.get(TRACK.lease_key) == OTHER.encode()


def test_work_is_records_waiting_or_retries_due(clean_redis: redis.Redis) -> None:
    """A lane has work while its list holds records or a retry is due; a retry due later is not work."""
    assert not TRACK.has_work(clean_redis)
    clean_redis.zadd(TRACK.retry_key, {"later": 4_000_000_000.0})
    assert not TRACK.has_work(clean_redis)
    clean_redis.zadd(TRACK.retry_key, {"due": 1.0})
    assert TRACK.has_work(clean_redis)
    clean_redis.delete(TRACK.retry_key)
    TRACK.push(clean_redis, records(1), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    assert TRACK.has_work(clean_redis)


# --- waking ------------------------------------------------------------------------------------


def test_waking_takes_the_lease_and_enqueues_one_drain_job(clean_redis: redis.Redis) -> None:
    """Waking a free lane takes its lease and puts one drain job, for that lease's token, on its queue;
    waking it again while it is owned does nothing."""
    assert TRACK.wake(clean_redis, DELIVERY)
    assert not TRACK.wake(clean_redis, DELIVERY)
    token = clean_redis.get(TRACK.lease_key).decode()
    assert drain_jobs(clean_redis, store.QUEUE_BULK) == [(TRACK.name, token)]
    assert drain_jobs(clean_redis, store.QUEUE_CONSENT) == []
    assert CONSENT.wake(clean_redis, DELIVERY)
    assert drain_jobs(clean_redis, store.QUEUE_CONSENT) == [
        (CONSENT.name, clean_redis.get(CONSENT.lease_key).decode())
    ]


def test_a_drain_job_runs_long_enough_for_its_slice_and_keeps_no_result(clean_redis: redis.Redis) -> None:
    """The job's timeout covers its longest run, a Braze call and the linger; its result is not kept."""
    TRACK.enqueue_drain(clean_redis, OWNER, DELIVERY)
    (job,) = Queue(store.QUEUE_BULK, connection=clean_redis, serializer=JSONSerializer).jobs
    assert job.timeout == lanes.job_timeout(DELIVERY)
    assert job.timeout > DELIVERY.longest_job_s + DELIVERY.read_timeout_s + DELIVERY.linger_s
    assert job.result_ttl == 0
    assert job.description == f"drain {TRACK.name}"


# --- counting -----------------------------------------------------------------------------------


def test_states_count_each_lane_in_one_look(clean_redis: redis.Redis) -> None:
    """Waiting, retrying, of those due, and owned: per lane, as Redis holds them."""
    TRACK.push(clean_redis, records(3), counter="c", hold=HOLD, token=OWNER, delivery=DELIVERY)
    clean_redis.zadd(TRACK.retry_key, {"due": 1.0, "later": 4_000_000_000.0})
    clean_redis.zadd(CONSENT.retry_key, {"due": 1.0})
    track, consent = lanes.states(clean_redis, [TRACK, CONSENT])
    assert (track.lane, track.waiting, track.retrying, track.due, track.owned) == (TRACK, 3, 2, 1, True)
    assert (consent.lane, consent.waiting, consent.retrying, consent.due, consent.owned) == (
        CONSENT,
        0,
        1,
        1,
        False,
    )
    assert lanes.states(clean_redis, []) == []
