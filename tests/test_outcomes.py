"""What a verdict means for a request's items, and where each record ends (handlers/outcomes.py).

Pure and exact: items come from real envelopes (the edge's schemas), verdicts are plain values.
Each test names the rule of docs/delivery.md it pins.
"""

from __future__ import annotations

import random

from handlers.braze import Delivered, RateLimited, Rejected, TooLarge, Unavailable
from handlers.outcomes import Dead, Later, Ledger, ending, judge, window_full
from handlers.packing import BrazeRequest, pack
from handlers.translate import Item, to_items
from relay.config import Delivery
from relay.envelope import Envelope
from relay.modes import DeadReason, Outcome
from tests.helpers import envelopes

NOW = 1_800_000_000.0
DELIVERY = Delivery(retry_base_s=1.0, retry_cap_s=600.0, max_attempts=5, retry_max_age_s=3600.0)


def events(count: int) -> list[Envelope]:
    """`count` custom events of different users."""
    return envelopes(
        "user_track",
        [{"external_id": f"u{i}", "name": "tap"} for i in range(count)],
        track_record_type="custom_events",
    )


def attributes(count: int) -> list[Envelope]:
    """`count` attribute updates of different users."""
    return envelopes(
        "user_track",
        [{"external_id": f"u{i}", "tier": "gold"} for i in range(count)],
        track_record_type="user_profile_attributes",
    )


def request_of(envs: list[Envelope]) -> BrazeRequest:
    """One Braze request holding every item of these records."""
    (request,) = pack([item for env in envs for item in to_items(env)], DELIVERY)
    return request


def ids(items: list[Item]) -> list[str]:
    return [item.envelope["id"] for item in items]


def test_2xx_delivers_every_item() -> None:
    """Rule "2xx: delivered"."""
    request = request_of(events(3))
    judgement = judge(request, Delivered(201), now=NOW, delivery=DELIVERY)
    assert ids(judgement.delivered) == ["req.0", "req.1", "req.2"]
    assert judgement.later == [] and judgement.dead == [] and judgement.resend == []


def test_2xx_errors_dead_letter_only_the_named_items() -> None:
    """Rule "2xx: delivered, except the items named in `errors`, which are dead-lettered with Braze's
    message"."""
    request = request_of(events(3))
    judgement = judge(
        request,
        Delivered(201, [("events", 1, "bad name"), ("events", 9, "nothing there")]),
        now=NOW,
        delivery=DELIVERY,
    )
    assert ids(judgement.delivered) == ["req.0", "req.2"]
    assert [(item.envelope["id"], dead) for item, dead in judgement.dead] == [
        ("req.1", Dead(DeadReason.BRAZE_REJECTED_ITEM, 201, "bad name"))
    ]


def test_429_pauses_and_waits_without_using_an_attempt() -> None:
    """Rule "429: wait for the reset, then send again (does not use up an attempt)"."""
    request = request_of(events(2))
    judgement = judge(request, RateLimited(NOW + 30), now=NOW, delivery=DELIVERY)
    assert judgement.pause_until == NOW + 30
    assert [later for _, later in judgement.later] == [
        Later(NOW + 30, "rate limited by Braze (429)", counts=False)
    ] * 2


def test_full_window_waits_without_using_an_attempt() -> None:
    """Rule "Rate limits are shared": a full window postpones the request, not counted as an attempt."""
    judgement = window_full(request_of(events(1)).items, NOW + 2)
    assert [later for _, later in judgement.later] == [
        Later(NOW + 2, "rate limited (waiting for the window)", counts=False)
    ]


def test_5xx_retries_every_item_at_one_backoff_due_time() -> None:
    """Rule "5xx ...: retry the whole request later with exponential backoff and jitter"."""
    envs = events(2)
    envs[1]["n"] = 3  # the request's retry step follows its most-tried record
    request = request_of(envs)
    judgement = judge(
        request,
        Unavailable("Braze answered 503", status=503),
        now=NOW,
        delivery=DELIVERY,
        rng=random.Random(7),
    )
    dues = {later.due for _, later in judgement.later}
    assert len(dues) == 1
    (due,) = dues
    assert NOW + 4.0 <= due <= NOW + 8.0  # attempt 4: uniform in [c/2, c], c = 1 * 2**3
    assert all(later.counts for _, later in judgement.later)


def test_ambiguous_failure_dead_letters_events_and_retries_attributes() -> None:
    """Rule "Ambiguous failures": events and purchases dead-lettered `ambiguous`, attributes retried."""
    ambiguous = Unavailable("no answer: ReadTimeout", ambiguous=True)
    event_judgement = judge(request_of(events(1)), ambiguous, now=NOW, delivery=DELIVERY)
    assert [dead.reason for _, dead in event_judgement.dead] == [DeadReason.AMBIGUOUS]
    attribute_judgement = judge(request_of(attributes(1)), ambiguous, now=NOW, delivery=DELIVERY)
    assert attribute_judgement.dead == [] and len(attribute_judgement.later) == 1


def test_connection_failure_before_sending_retries_events() -> None:
    """Rule "the connection failed before the body was sent: retry" (events too: Braze has nothing)."""
    judgement = judge(
        request_of(events(1)), Unavailable("connection failed: ConnectionError"), now=NOW, delivery=DELIVERY
    )
    assert judgement.dead == [] and len(judgement.later) == 1


def test_400_for_a_batch_is_halved() -> None:
    """Rule "400 for a batch: halve it and resend, so one bad record does not take the others with it"."""
    request = request_of(events(5))
    judgement = judge(request, Rejected(400, "bad"), now=NOW, delivery=DELIVERY)
    assert [ids(half) for half in judgement.resend] == [["req.0", "req.1"], ["req.2", "req.3", "req.4"]]
    assert judgement.dead == []


def test_400_for_one_record_dead_letters_it() -> None:
    """Rule "the bad record is dead-lettered with Braze's message"."""
    judgement = judge(request_of(events(1)), Rejected(400, "bad name"), now=NOW, delivery=DELIVERY)
    assert [(ids([item]), dead) for item, dead in judgement.dead] == [
        (["req.0"], Dead(DeadReason.BRAZE_REJECTED, 400, "bad name"))
    ]


def test_413_splits_and_a_lone_record_is_dead_lettered() -> None:
    """Rule "413: split the batch in halves until it fits; a single record still too large is
    dead-lettered"."""
    assert len(judge(request_of(events(2)), TooLarge("too big"), now=NOW, delivery=DELIVERY).resend) == 2
    lone = judge(request_of(events(1)), TooLarge("too big"), now=NOW, delivery=DELIVERY)
    assert [dead for _, dead in lone.dead] == [Dead(DeadReason.BRAZE_REJECTED, 413, "too big")]


def test_401_dead_letters_a_whole_batch_at_once() -> None:
    """Rule "401, 403, 404 and other 4xx: dead-letter at once" (no halving: no record can pass)."""
    judgement = judge(request_of(events(4)), Rejected(401, "Invalid API key"), now=NOW, delivery=DELIVERY)
    assert judgement.resend == [] and len(judgement.dead) == 4


# --- a record's ending --------------------------------------------------------------------------


def test_dead_outranks_retry_and_delivered() -> None:
    """A record with one item dead and another delivered ends dead-lettered."""
    (env,) = events(1)
    ledger = Ledger(delivered={"req.0"}, later={"req.0": Later(NOW + 1, "x")})
    ledger.fail("req.0", Dead(DeadReason.BRAZE_REJECTED_ITEM, 201, "first"))
    ledger.fail("req.0", Dead(DeadReason.AMBIGUOUS, None, "second"))
    end = ending(env, ledger, now=NOW, delivery=DELIVERY)
    assert end.outcome is Outcome.DEAD_LETTERED and end.dead == Dead(
        DeadReason.BRAZE_REJECTED_ITEM, 201, "first"
    )
    assert end.envelope["n"] == 1


def test_retry_counts_an_attempt_and_remembers_the_first_failure() -> None:
    """Rule "Attempts": a failed delivery uses an attempt; the age bound runs from the first failure."""
    (env,) = events(1)
    end = ending(
        env, Ledger(later={"req.0": Later(NOW + 5, "Braze answered 503")}), now=NOW, delivery=DELIVERY
    )
    assert end.outcome is Outcome.RETRY and end.later == Later(NOW + 5, "Braze answered 503")
    assert (end.envelope["n"], end.envelope["first"], end.envelope["why"]) == (1, NOW, "Braze answered 503")
    assert "n" not in env or env["n"] == 0, "the stored envelope is left as it was"


def test_429_wait_does_not_count_an_attempt() -> None:
    """Rule "429 ... (does not use up an attempt)"."""
    (env,) = events(1)
    end = ending(
        env, Ledger(later={"req.0": Later(NOW + 5, "429", counts=False)}), now=NOW, delivery=DELIVERY
    )
    assert end.outcome is Outcome.RETRY and end.envelope["n"] == 0


def test_attempts_exhausted_dead_letters() -> None:
    """Rule "A record gets at most RELAY_MAX_ATTEMPTS deliveries that fail with 5xx or no answer"."""
    (env,) = events(1)
    env["n"], env["first"] = DELIVERY.max_attempts - 1, NOW - 10
    end = ending(
        env, Ledger(later={"req.0": Later(NOW + 5, "Braze answered 503")}), now=NOW, delivery=DELIVERY
    )
    assert end.outcome is Outcome.DEAD_LETTERED
    assert end.dead == Dead(DeadReason.RETRIES_EXHAUSTED, None, "Braze answered 503")


def test_age_bound_dead_letters_even_429_waits() -> None:
    """Rule "dead-lettered once RELAY_RETRY_MAX_AGE_S has passed since its first failure"."""
    (env,) = events(1)
    env["first"] = NOW - DELIVERY.retry_max_age_s
    end = ending(
        env, Ledger(later={"req.0": Later(NOW + 5, "429", counts=False)}), now=NOW, delivery=DELIVERY
    )
    assert end.outcome is Outcome.DEAD_LETTERED and end.dead is not None
    assert end.dead.reason is DeadReason.RETRIES_EXHAUSTED


def test_untranslatable_does_not_count_an_attempt() -> None:
    """A record that cannot be translated never reached Braze: dead-lettered, attempts unchanged."""
    (env,) = events(1)
    ledger = Ledger()
    ledger.fail("req.0", Dead(DeadReason.UNTRANSLATABLE, None, "KeyError"))
    assert ending(env, ledger, now=NOW, delivery=DELIVERY).envelope["n"] == 0


def test_nothing_sent_is_superseded() -> None:
    """Rule "No stale overwrite": a record whose every field was newer in Braze ends superseded."""
    (env,) = attributes(1)
    assert ending(env, Ledger(), now=NOW, delivery=DELIVERY).outcome is Outcome.SUPERSEDED


def test_latest_wait_of_a_record_stands() -> None:
    """Of several waits for one record (its items in different requests), the latest due time stands."""
    ledger = Ledger()
    ledger.postpone("r", Later(NOW + 9, "a"))
    ledger.postpone("r", Later(NOW + 3, "b"))
    assert ledger.later["r"] == Later(NOW + 9, "a")
