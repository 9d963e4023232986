"""Send marks: a deduplicated route's records are never sent twice by a worker's retry.

A record whose route names a `dedup_key` (its envelope carries `dd`) is marked in Redis around each
send: `sending` just before its request leaves, `delivered` as soon as Braze's 2xx is read; a mark is
dropped when Braze answers that it did not take the record (429, a 5xx, a full rate-limit window),
and every mark of a chunk goes in the transaction that commits the chunk's outcome. A worker killed
between Braze's answer and that commit leaves its marks behind, and the next owner of the lane reads
them before it sends anything (`settle`):

- `delivered`: Braze took it; it is counted delivered and not sent again;
- `sending`: the request left and no answer was recorded. An event or purchase (Braze stores them
  twice if sent twice) goes to the dead-letter store as `ambiguous`, for an operator to check and
  replay; an attribute update, alias, identify or subscription state is sent again (idempotent).

What this cannot close: a worker killed between Braze's answer and the `delivered` mark (one Redis
write, after the answer is read), and one killed after the `sending` mark but before its request
left, leave `sending`: such an event is dead-lettered as ambiguous though Braze holds it once, or
not at all. Never sent twice, but an operator decides. docs/delivery.md says so, and bench/dedup.py
measures it.
"""

from __future__ import annotations

from typing import Any

import redis

from handlers.outcomes import Dead, Judgement, Ledger
from handlers.packing import BrazeRequest
from relay import store
from relay.envelope import Envelope
from relay.modes import DeadReason, Kind, kind_of

SENDING, DELIVERED = b"s", b"d"
# A mark outlives its chunk's commit only when no worker commits it: a week, past any retry's age.
TTL_S = 7 * 86400
AMBIGUOUS = "sent by a worker that stopped before Braze's answer was recorded: Braze may hold it"


def _marked(envelopes: list[Envelope]) -> list[Envelope]:
    return [env for env in envelopes if env.get("dd")]


class SendMarks:
    """The marks of one Redis: written around sends, read when a chunk is taken."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def settle(self, envelopes: list[Envelope], ledger: Ledger) -> set[str]:
        """Records a previous send settled (delivered, or ambiguous), entered in the ledger: not to send."""
        marked = _marked(envelopes)
        if not marked:
            return set()
        found = self.client.mget([store.keys(env["ws"]).sent(env["id"]) for env in marked])
        settled: set[str] = set()
        for env, mark in zip(marked, found, strict=True):
            if mark == DELIVERED:
                ledger.delivered.add(env["id"])
            elif mark == SENDING and kind_of(env["kind"]) in (Kind.EVENTS, Kind.PURCHASES):
                ledger.fail(env["id"], Dead(DeadReason.AMBIGUOUS, None, AMBIGUOUS))
            else:
                continue
            settled.add(env["id"])
        return settled

    def before(self, request: BrazeRequest) -> None:
        """Mark the request's deduplicated records `sending` (before it leaves)."""
        self._write({item.envelope["id"]: item.envelope for item in request.items}, SENDING)

    def after(self, judgement: Judgement) -> None:
        """Mark what Braze took `delivered`; drop the marks of what it did not take (to send again, or
        refused: sent again after a crash, Braze refuses it again), but not of an ambiguous send."""
        self._write({item.envelope["id"]: item.envelope for item in judgement.delivered}, DELIVERED)
        not_taken = [item.envelope for item, _ in judgement.later]
        not_taken += [
            item.envelope for item, dead in judgement.dead if dead.reason is not DeadReason.AMBIGUOUS
        ]
        marked = _marked(not_taken)
        if marked:
            self.client.delete(*{store.keys(env["ws"]).sent(env["id"]) for env in marked})

    def _write(self, envelopes: dict[str, Envelope], mark: bytes) -> None:
        marked = _marked(list(envelopes.values()))
        if not marked:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for env in marked:
                pipe.set(store.keys(env["ws"]).sent(env["id"]), mark, ex=TTL_S)
            pipe.execute()

    @staticmethod
    def clear(pipe: Any, envelopes: list[Envelope]) -> None:
        """Queue dropping the marks of a chunk's records on its commit's transaction."""
        marked = _marked(envelopes)
        if marked:
            pipe.delete(*(store.keys(env["ws"]).sent(env["id"]) for env in marked))
