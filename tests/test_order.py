"""The order across lanes' marks (relay/order.py) on the real Redis: gates, erase marks, links, fences."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
import redis

from handlers.translate import to_items
from relay import order
from relay.envelope import Envelope
from relay.lanes import Lane
from relay.modes import MODES, Kind
from tests.helpers import KEYS, envelopes

WS = "default"
TTL = 3600
_arrivals = itertools.count()


def env(kind: str, rec: dict[str, Any], *, at: float | None = None) -> Envelope:
    """An envelope as the edge makes it; each one arrives after the last."""
    n = next(_arrivals)
    return {
        "id": f"r{n}.0",
        "route": kind,
        "kind": kind,
        "ws": WS,
        "rec": rec,
        "t": 0.0,
        "seq": f"{time.time_ns():020d}.{n:06d}",
        "at": time.time() if at is None else at,
        "n": 0,
    }


def user(external_id: str) -> dict[str, Any]:
    """A record naming one external id."""
    return {"_id": {"external_id": external_id}}


def store(client: redis.Redis, *gating: Envelope) -> None:
    """What the edge does for gating records: their marks, in one transaction."""
    with client.pipeline(transaction=True) as pipe:
        call = order.plan_acceptance(client, WS, list(gating), TTL, watch=pipe)
        pipe.multi()
        assert call is not None
        order.accept(pipe, client, call)
        pipe.execute()


def look(
    client: redis.Redis, *records: Envelope, member: str = "default:track|t|1", **options: Any
) -> order.Checked:
    """A drain job's look at a chunk."""
    return order.look(client, WS, member, list(records), **options)


def settle(client: redis.Redis, checked: order.Checked, *records: Envelope, member: str = "") -> None:
    """A commit that settles these gating records (as the chunk that sent them saw their gates)."""
    gates = [(record["seq"], checked.own_gates[record["id"]][1]) for record in records]
    with client.pipeline(transaction=True) as pipe:
        order.settle(pipe, client, WS, gates, member)
        pipe.execute()


def test_a_record_after_a_gate_waits_until_it_is_settled(clean_redis: redis.Redis) -> None:
    """Events by an alias accepted after its creation wait for it; those accepted before do not."""
    alias = {"alias_name": "a1", "alias_label": "web"}
    before = env("events", {"_id": {"user_alias": alias}})
    created = env("alias", alias)
    after = env("events", {"_id": {"user_alias": alias}})
    store(clean_redis, created)
    checked = look(clean_redis, before, after, created)
    assert checked.verdicts == {after["id"]: order.Verdict.WAIT}
    assert checked.waiting_on[after["id"]] == "alias"
    settle(clean_redis, checked, created)
    assert look(clean_redis, after).verdicts == {}
    assert not clean_redis.exists(KEYS.order_gates), "no gate pending: the count goes"


def test_a_delete_erases_earlier_records_and_holds_later_ones(clean_redis: redis.Redis) -> None:
    """Records of a user accepted before its delete are erased; those after wait for the delete."""
    earlier, delete, later = env("events", user("u1")), env("delete", user("u1")), env("events", user("u1"))
    other = env("events", user("u2"))
    store(clean_redis, delete)
    checked = look(clean_redis, earlier, delete, later, other)
    assert checked.verdicts == {earlier["id"]: order.Verdict.ERASED, later["id"]: order.Verdict.WAIT}
    settle(clean_redis, checked, delete)
    assert look(clean_redis, earlier, later).verdicts == {earlier["id"]: order.Verdict.ERASED}


def test_a_gating_record_erased_by_a_later_delete_settles_its_gate(clean_redis: redis.Redis) -> None:
    """An alias created, then its user deleted before the alias went: the alias is never sent, and
    its gate is settled with it, so a record after both waits for the delete alone."""
    alias = {"alias_name": "z", "alias_label": "web"}
    created = env("alias", alias)
    store(clean_redis, created)
    delete = env("delete", {"_id": {"user_alias": alias}})
    store(clean_redis, delete)
    checked = look(clean_redis, created)
    assert checked.verdicts == {created["id"]: order.Verdict.ERASED}
    settle(clean_redis, checked, created)
    after = env("events", {"_id": {"user_alias": alias}})
    assert look(clean_redis, after).waiting_on == {after["id"]: "delete"}


def test_an_identify_links_its_users_for_a_later_delete(clean_redis: redis.Redis) -> None:
    """After identify(alias -> external id), a delete of the external id erases and holds the alias's too."""
    alias = {"alias_name": "x", "alias_label": "web"}
    by_alias = env("events", {"_id": {"user_alias": alias}})
    identify = env("identify", {"external_id": "e1", "user_alias": alias})
    store(clean_redis, identify)
    settle(clean_redis, look(clean_redis, identify), identify)
    delete = env("delete", user("e1"))
    store(clean_redis, delete)
    later_by_alias = env("events", {"_id": {"user_alias": alias}})
    checked = look(clean_redis, by_alias, later_by_alias)
    assert checked.verdicts == {
        by_alias["id"]: order.Verdict.ERASED,
        later_by_alias["id"]: order.Verdict.WAIT,
    }


def test_the_consent_lane_waits_for_deletes_only(clean_redis: redis.Redis) -> None:
    """A consent change after an alias creation goes at once; one after a delete waits for it."""
    alias = {"alias_name": "c", "alias_label": "web"}
    store(clean_redis, env("alias", alias))
    consent = env("consent", {"_id": {"user_alias": alias}})
    assert look(clean_redis, consent, erase_gates_only=True).verdicts == {}
    assert look(clean_redis, consent).verdicts == {consent["id"]: order.Verdict.WAIT}
    store(clean_redis, env("delete", {"_id": {"user_alias": alias}}))
    later = env("consent", {"_id": {"user_alias": alias}})
    assert look(clean_redis, later, erase_gates_only=True).verdicts == {later["id"]: order.Verdict.WAIT}


def test_a_chunk_is_checked_user_by_user_only_while_marks_may_matter(clean_redis: redis.Redis) -> None:
    """No gate pending and no recent delete: one call, no per-user read; a recent delete: checked."""
    delete = env("delete", user("u9"))
    store(clean_redis, delete)
    settle(clean_redis, look(clean_redis, delete), delete)
    much_later = env("events", user("u9"), at=time.time() + order.RECENT_ERASE_S + 5)
    assert look(clean_redis, much_later).verdicts == {}, "too new to be older than any delete"
    earlier = env("events", user("u9"), at=time.time() - 60)
    earlier["seq"] = "0" * 20 + ".000000"
    assert look(clean_redis, earlier).verdicts == {earlier["id"]: order.Verdict.ERASED}


def test_a_delete_waits_for_chunks_checked_before_it(clean_redis: redis.Redis) -> None:
    """Another lane's chunk checked before the delete holds it until committed, or until its owner
    loses the lane; the delete's own lane does not hold it."""
    track, deletes = Lane("default:track"), Lane("default:delete")
    clean_redis.set(track.lease_key, "tok", px=60_000)
    member = f"{track.name}|tok|1"
    chunk = look(clean_redis, env("events", user("u3")), member=member)
    own = look(clean_redis, env("events", user("u4")), member=f"{deletes.name}|tok2|1")
    delete = env("delete", user("u3"))
    store(clean_redis, delete)
    stored_at = look(clean_redis, delete, member=f"{deletes.name}|tok2|2").own_gates[delete["id"]][0]
    lanes = [track.name, deletes.name]
    assert chunk.at < stored_at and own.at < stored_at
    assert not order.fences_clear(clean_redis, WS, stored_at, deletes.name, lanes)
    with clean_redis.pipeline(transaction=True) as pipe:
        order.settle(pipe, clean_redis, WS, [], member)
        pipe.execute()
    assert order.fences_clear(clean_redis, WS, stored_at, deletes.name, lanes)
    look(clean_redis, env("events", user("u5")), member=f"{track.name}|gone|2")  # an owner that lost it
    later = look(clean_redis, env("events", user("u6")), member=f"{track.name}|tok|3").at
    assert order.fences_clear(clean_redis, WS, later + 0.001, deletes.name, lanes) is False
    clean_redis.delete(track.lease_key)
    assert order.fences_clear(clean_redis, WS, later + 1, deletes.name, lanes)
    assert clean_redis.zcard(KEYS.fences) == 2, "the dead owner's fences went; the delete lane's stay"


IDENTITY_EXTRAS = [
    ("user_identifying", {"external_id": "u", "email": "a@example.com"}),
    ("user_identifying", {"external_id": "u", "phone": "+14155550100", "prioritization": ["identified"]}),
    (
        "user_merge",
        {
            "merge": {"email": "a@example.com"},
            "keep": {"user_alias": {"alias_name": "a", "alias_label": "l"}},
        },
    ),
]


@pytest.mark.parametrize(
    ("mode", "record", "track_record_type"),
    [
        (mode.mode, dict(mode.sample), mode.track_record_type)
        for mode in MODES
        if mode.kind is not Kind.CATALOG
    ]
    + [(mode, record, None) for mode, record in IDENTITY_EXTRAS],
)
def test_the_users_a_record_names_are_those_its_translation_changes(
    mode: str, record: dict[str, Any], track_record_type: str | None
) -> None:
    """relay/order.py reads a record's users without the translators (relay/ imports no handler): for
    every mode (catalog items are no users) they are those of handlers/translate.py's items."""
    (env,) = envelopes(mode, [record], track_record_type=track_record_type)
    assert set(order.users_of(env)) == {user for item in to_items(env) for user in item.users}
