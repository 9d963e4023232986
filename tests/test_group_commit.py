"""Group commit (receiver/group_commit.py) on the real Redis: concurrent writes share round trips,
and each writer still gets exactly its own result or its own error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from receiver.group_commit import MAX_BATCH, GroupCommit
from tests.processes import free_port

PUSH = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])"


def in_threads(count: int, call: Callable[[int], Any]) -> list[Any]:
    """Run `call(i)` in `count` threads started together; each one's result or exception."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def one(index: int) -> None:
        start.wait()
        try:
            results[index] = call(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_each_writer_gets_its_own_result(clean_redis: redis.Redis) -> None:
    """200 writers from 20 threads: every write lands once, each sees the result of its own script."""
    group = GroupCommit(clean_redis, wait_s=10)
    script = clean_redis.register_script(PUSH)

    def write(index: int) -> list[int]:
        return [group.run(script, [f"q{index}"], [f"{index}.{n}"]) for n in range(10)]

    results = in_threads(20, write)
    assert results == [list(range(1, 11))] * 20, "each list grew by its own writes, in order"
    for index in range(20):
        assert [raw.decode() for raw in clean_redis.lrange(f"q{index}", 0, -1)] == [
            f"{index}.{n}" for n in range(10)
        ]


def test_one_refused_write_fails_only_its_writer(clean_redis: redis.Redis) -> None:
    """A write Redis refuses (here WRONGTYPE) raises in its own request; the others of its batch land."""
    group = GroupCommit(clean_redis, wait_s=10)
    script = clean_redis.register_script(PUSH)
    clean_redis.set("not-a-list", "x")
    results = in_threads(
        16, lambda index: group.run(script, ["not-a-list" if index == 7 else f"ok{index}"], ["v"])
    )
    assert isinstance(results[7], redis.ResponseError)
    assert [result for index, result in enumerate(results) if index != 7] == [1] * 15


def test_a_script_redis_forgot_is_loaded_again(clean_redis: redis.Redis) -> None:
    """After SCRIPT FLUSH (a Redis restart without its scripts), writes load the script and land."""
    group = GroupCommit(clean_redis, wait_s=10)
    script = clean_redis.register_script(PUSH)
    assert group.run(script, ["q"], ["a"]) == 1
    clean_redis.script_flush()
    assert in_threads(8, lambda index: group.run(script, [f"r{index}"], ["b"])) == [1] * 8


def test_no_redis_fails_every_writer_and_the_next_ones_too() -> None:
    """Redis unreachable: every writer of the batch hears the error (503 at the edge); none hangs."""
    # No retries of its own (redis-py retries a refused connection by default): the fan-out is the point.
    client = redis.Redis(
        port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    group = GroupCommit(client, wait_s=5)
    script = client.register_script(PUSH)
    for _ in range(2):  # the lead is given back after a failure: a second round fails as cleanly
        results = in_threads(8, lambda index: group.run(script, ["q"], ["v"]))
        assert all(isinstance(result, redis.ConnectionError) for result in results), results


def test_more_writers_than_one_batch_all_land(clean_redis: redis.Redis) -> None:
    """More writers at once than MAX_BATCH: the lead passes on, and every write lands."""
    group = GroupCommit(clean_redis, wait_s=10)
    script = clean_redis.register_script(PUSH)
    count = MAX_BATCH * 2 + 5
    results = in_threads(count, lambda index: group.run(script, ["shared"], [str(index)]))
    assert sorted(results) == list(range(1, count + 1)), "one list, every write counted once"
    assert clean_redis.llen("shared") == count
