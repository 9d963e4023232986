"""A drain job's side of the order across lanes (relay/order.py): check chunks, hold erasing requests.

Before a chunk is translated, its records are checked against their users' marks: a record whose
user's delete was accepted after it is never sent (superseded); a record accepted after a gate
still pending (an alias creation, identify or delete of its user not yet answered by Braze) waits in
the lane's retry set, looked at again soon, not counted as an attempt, for at most
`RELAY_ORDER_MAX_WAIT_S`. A request that carries an erasing record (a delete) goes only once no
other lane holds a chunk checked before the delete was stored. The consent lane waits for deletes
only: its records go at once, and again after their user's earlier records (handlers/commit.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from handlers.outcomes import Later
from handlers.packing import BrazeRequest
from relay import order
from relay.envelope import Envelope
from relay.lanes import Lane
from relay.modes import BY_KIND, LaneFamily, kind_of

if TYPE_CHECKING:
    from handlers.commit import Flight
    from handlers.context import Context

FIRST_LOOK_S = 0.1  # a waiting record is looked at again this soon, then less often
LONGEST_LOOK_S = 1.0
FENCE_LOOK_S = 0.02  # an erasing request's fences are asked about at most this often
LANES_LOOK_S = 1.0  # the workspace's lanes (whose leases vouch for their fences) are read this often


def waiting(kind: str, since: float, now: float) -> Later:
    """Look at a record again soon: it waits for an earlier `kind` of its user, since `since`."""
    delay = min(LONGEST_LOOK_S, FIRST_LOOK_S + (now - since) / 4)
    return Later(now + delay, f"waiting for an earlier {kind} of the same user", counts=False, wait=True)


class Ordering:
    """One drain job's checks and fences; does nothing when RELAY_ORDER_ACROSS_LANES is off."""

    def __init__(self, ctx: Context, lane: Lane, token: str) -> None:
        self.client = ctx.redis
        self.lane, self.token = lane, token
        self.on = ctx.settings.delivery.order_across_lanes
        self.max_wait_s = ctx.settings.delivery.order_max_wait_s
        self.count = 0
        self.fence_at: dict[BrazeRequest, float] = {}
        self._lanes: list[str] = []
        self._lanes_read = -LANES_LOOK_S
        self._cleared: dict[float, tuple[float, bool]] = {}  # fence time -> (asked at, clear)

    def check(self, flight: Flight) -> list[Envelope]:
        """The chunk's records that may go now; the ledger notes the others (erased, or waiting)."""
        records = [env for _, env, _ in flight.chunk]
        if not self.on:
            return records
        self.count += 1
        flight.member = f"{self.lane.name}|{self.token}|{self.count}"
        checked = order.look(
            self.client,
            self.lane.workspace,
            flight.member,
            records,
            erase_gates_only=self.lane.family is LaneFamily.CONSENT,
        )
        flight.checked = checked
        now = time.time()
        going = []
        for env in records:
            verdict = checked.verdicts.get(env["id"], order.Verdict.GO)
            if verdict is order.Verdict.ERASED:
                flight.ledger.erased.add(env["id"])
                continue
            if verdict is order.Verdict.WAIT:
                since = env.get("w", now)
                if now - since < self.max_wait_s:
                    flight.ledger.postpone(env["id"], waiting(checked.waiting_on[env["id"]], since, now))
                    continue
                flight.gave_up += 1  # it has waited its longest: it goes on
            if "w" in env:
                flight.waited.append(now - env.pop("w"))
            going.append(env)
        return going

    def fence(self, request: BrazeRequest, flight: Flight) -> None:
        """Note the time the request's erasing records were stored: it goes once the fences allow."""
        if flight.checked is None:
            return
        gates = flight.checked.own_gates
        times = [
            gates[item.envelope["id"]][0]
            for item in request.items
            if item.envelope["id"] in gates and BY_KIND[kind_of(item.envelope["kind"])].erases
        ]
        if times:
            self.fence_at[request] = max(times)

    def may_go(self, request: BrazeRequest) -> bool:
        """True unless the request erases users while another lane may still send their older records."""
        at = self.fence_at.get(request)
        if at is None:
            return True
        if self._clear(at):
            del self.fence_at[request]
            return True
        return False

    def _clear(self, at: float) -> bool:
        """Whether the fences before `at` are gone (asked of Redis at most every FENCE_LOOK_S)."""
        now = time.monotonic()
        asked = self._cleared.get(at)
        if asked is not None and (asked[1] or now - asked[0] < FENCE_LOOK_S):
            return asked[1]
        if now - self._lanes_read >= LANES_LOOK_S:
            workspace = self.lane.workspace
            self._lanes = [lane.name for lane in Lane.in_workspaces(self.client, [workspace])]
            self._lanes_read = now
        clear = order.fences_clear(self.client, self.lane.workspace, at, self.lane.name, self._lanes)
        self._cleared = {key: value for key, value in self._cleared.items() if not value[1]}
        self._cleared[at] = (now, clear)
        return clear
