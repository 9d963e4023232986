"""The drain job: the one owner of a lane takes its records in chunks and delivers them to Braze.

The owner keeps up to `RELAY_INFLIGHT` Braze requests in flight at once, sent by a pool of sender
threads: it takes a *chunk* of records from the lane's head (a quarter of the window's requests), prepares
it (translate, newest-value watermarks, skip_unchanged, packed into requests by
handlers/packing.py `plan`, which puts a user's records of the chunk together) while earlier
requests fly, and lets each request go as soon as a sender is free and none of its users is in a
request in flight or waiting before it (handlers/window.py). The shared rate limit is taken and
the lease checked before each send.

When the lane's users repeat within the window's reach (a backfill of many events per user), most
of a chunk's requests wait for their users' earlier requests: the requests in flight would then be
bound by the lane's distinct users, not by `RELAY_INFLIGHT`. So the job looks further down the
lane: its next chunks grow (up to a whole window's records; the first chunk of a job is one), so
that each user's records of that stretch ride in one request; chunks shrink back once their users
no longer wait. A chunk's users are packed by the earlier request they wait for, so that each new
request waits for one request rather than many, and goes as soon as that one is answered.

Records stay at the head of the lane's Redis list until the outcome of their chunk is committed
(trimmed from the list, put on the retry set, or dead-lettered) in one transaction that checks
the owner still holds the lease; chunks are committed in the order they were taken. A worker
killed mid-flight commits nothing more, its lease expires, and the next owner delivers the
uncommitted records again: at least once, never lost.

This module does the sending; handlers/commit.py writes a chunk's outcomes. What Braze's answers
mean and where records end is decided by the pure functions of handlers/braze.py (`classify`),
handlers/outcomes.py (`judge`, `ending`), handlers/packing.py, handlers/window.py and
handlers/watermarks.py.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

import redis
import requests
from rq import Queue

from handlers import context
from handlers.braze import Answer, Verdict, classify, classify_failure
from handlers.commit import Chunk, Flight, Tally, commit
from handlers.context import Context
from handlers.order import Ordering
from handlers.outcomes import Dead, Judgement, judge, window_full
from handlers.packing import BrazeRequest, pack, plan
from handlers.translate import Item, to_items
from handlers.window import Window
from relay import redis_health, store
from relay.envelope import loads
from relay.lanes import Lane
from relay.modes import DeadReason, LaneFamily

log = logging.getLogger(__name__)

# A chunk is a quarter of the window: preparing one holds the job's thread (and the GIL) for a while,
# during which answers coming back free senders that nothing dispatches; small chunks keep that short.
CHUNK_SHARE = 4
# Records taken and not yet committed, at most, in chunks of the smallest size: bounds memory and
# redelivery, and leaves room for a chunk of the largest reach (a whole window) to be prepared while
# the one before it flies.
CHUNKS_AHEAD = 2 * CHUNK_SHARE
PACKING_SLACK = 1 / 16  # a whole window's chunk holds this much less than its requests could
WAITING_SHARE = 0.5  # a chunk with more of its requests waiting for earlier ones: users repeat, reach further
CONFIRM_EVERY_S = 0.5  # the loop renews the lease this often (each send checks it besides)
FRESH_CHECK_S = 0.05  # a send relies on a lease check begun this recently (by any sender); else checks


@dataclass
class Sent:
    """What one request (and the halves sent after it) came to: judgements in order, cost, lease."""

    judgements: list[Judgement] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    lease_lost: bool = False  # the lease check before a send failed: nothing more may be sent


class Drainer:
    """One run of a lane's drain job: its window of requests in flight, for a time slice or more."""

    def __init__(self, ctx: Context, lane: Lane, token: str) -> None:
        self.ctx = ctx
        self.client: redis.Redis = ctx.redis
        self.delivery = ctx.settings.delivery
        self.lane, self.token = lane, token
        self.workspace = self.lane.workspace
        family = self.lane.family
        self.batch_size = self.delivery.track_combined or self.delivery.track_per_array
        if family is not LaneFamily.TRACK:
            self.batch_size = self.delivery.batch_limit
        self.width = self.delivery.inflight
        # A quarter of the window's requests' worth of records, less PACKING_SLACK: a user's records
        # that ride together leave requests a little short of full, and a whole window's chunk must
        # still fit in the window at once (a request left over would wait a whole answer time).
        whole = int(self.width * self.batch_size * (1 - PACKING_SLACK)) // CHUNK_SHARE
        self.chunk_size = max(self.batch_size, whole)
        # Chunks are this many times chunk_size: more when users repeat (see the module). The first
        # reaches a whole window: nothing flies yet, and a backlog's users can each go with a few records.
        self.reach = CHUNK_SHARE
        self.left = 0  # records on the list past those taken, as the last look found them
        self.linger_s = (
            self.delivery.consent_linger_s if family is LaneFamily.CONSENT else self.delivery.linger_s
        )
        self.rq_queues = [Queue(name, connection=self.client) for name in store.RQ_QUEUES]
        self.flights: deque[Flight] = deque()  # taken, not yet committed, oldest first
        self.window: Window[BrazeRequest] = Window()
        self.flying: dict[Future[Sent], tuple[Flight, BrazeRequest]] = {}
        self.answered: queue.SimpleQueue[Future[Sent]] = queue.SimpleQueue()  # flying futures, once done
        self.owner: dict[BrazeRequest, Flight] = {}
        self.lost = False
        self.confirmed_at = -FRESH_CHECK_S  # when the last successful lease check began (monotonic)
        # Renewing the lease writes its key, which the commit's transaction watches: a sender renewing
        # between WATCH and EXEC would abort our own commit. Renewals and commits take turns.
        self.lease_lock = threading.Lock()
        self._looked, self._others = -1.0, False  # others_waiting(), looked up at most every 0.1 s
        self.ordering = Ordering(ctx, lane, token)

    def confirm(self) -> bool:
        """Renew the lease and check it is still ours; False: another owner took the lane (stop at once)."""
        with self.lease_lock:
            return self._confirm()

    def _confirm(self) -> bool:
        """`confirm`, the lease lock held; a success is noted with the time the check began."""
        asked = time.monotonic()
        if not self.lane.confirm(self.client, self.token, self.delivery):
            return False
        self.confirmed_at = asked
        return True

    def fresh(self) -> bool:
        """Check the lease before a send: a check begun less than FRESH_CHECK_S ago stands (it renewed the
        lease for its whole length, and the monotonic clock runs on while the process is frozen, so a
        thawed worker checks again); else confirm now, unless a sender did while this one waited."""
        if time.monotonic() - self.confirmed_at < FRESH_CHECK_S:
            return True
        with self.lease_lock:
            return time.monotonic() - self.confirmed_at < FRESH_CHECK_S or self._confirm()

    def run(self) -> dict[str, Any]:
        """Deliver until the lane is empty or the slice is over; then release or hand over.

        Past its slice the job keeps the lane while no other drain job waits for a worker (up to
        `Delivery.longest_job_s`): handing over empties the window, which costs a Braze answer time.
        """
        started = time.monotonic()
        deadline, confirmed = started + self.delivery.slice_s, 0.0
        committed, stopping = 0, False
        while True:
            now = time.monotonic()
            if now - confirmed >= CONFIRM_EVERY_S:
                if not self.confirm():
                    self.lost = True
                confirmed = now
            if self.lost:
                break
            if not stopping and now >= deadline:
                if self.others_waiting() or now - started >= self.delivery.longest_job_s:
                    stopping = True
                else:
                    deadline = now + self.delivery.slice_s
            room = 0 if stopping else self.room_ahead()
            if room:
                chunk = self.take(room)
                if chunk is None:
                    continue  # lingering for company
                if chunk:
                    self.prepare(chunk)
                elif not self.flights:
                    if self.release():
                        return {"lane": self.lane.name, "chunks": committed}
                    continue
            self.dispatch()
            self.collect(timeout=0.05 if self.flying else 0.0)
            self.dispatch()  # the answers freed senders and users: send before the next chunk is prepared
            committed += self.commit_done()
            if stopping and not self.flights:
                # Hand over to a fresh job at the back of the queue, so other lanes get a turn.
                self.lane.enqueue_drain(self.client, self.token, self.delivery)
                return {"lane": self.lane.name, "chunks": committed, "handed_over": True}
        # The lease is gone: let the requests in flight come back (their answers are not committed:
        # the next owner sends those records again), and stop.
        while self.flying:
            self.collect(timeout=1.0)
        log.warning(
            "lease lost; the next owner delivers the uncommitted records", extra={"lane": self.lane.name}
        )
        return {"lane": self.lane.name, "chunks": committed, "lease_lost": True}

    def room_ahead(self) -> int:
        """How many records the next chunk may hold (0: none yet).

        A chunk of the full reach when the records taken and not yet committed leave room for it; the
        lane's last records (as the last look found them) when they fit in the room left, so that the
        end of a backlog does not wait for a commit to be taken.
        """
        taken = sum(len(flight.chunk) for flight in self.flights)
        room = CHUNKS_AHEAD * self.chunk_size - taken
        size = self.chunk_size * self.reach
        if size <= room:
            return size
        return self.left if 0 < self.left <= room else 0

    def take(self, size: int) -> Chunk | None:
        """The next chunk: due retries first, else the list after what is already taken.

        From the list it takes whole requests' worth (the rest waits for company, so a stream of
        one-record postbacks still fills its requests), or what there is once the head has waited
        the linger out. None: lingering (nothing in flight, a short batch, young). []: nothing.
        """
        now = time.time()
        offset = sum(flight.from_list for flight in self.flights)
        taken = {raw for flight in self.flights for raw in flight.retried}
        due, length, head = self.lane.look(self.client, offset, size + len(taken), now)
        self.left = max(0, length - offset)
        due = [raw for raw in due if raw not in taken]
        if due:
            return [(raw, loads(raw), True) for raw in due[:size]]
        waiting = min(length - offset, size)
        if waiting <= 0 or head is None:
            return []
        age = now - loads(head)["at"]
        if waiting < self.batch_size:
            if age < self.linger_s:
                if self.flying:
                    return []  # answers come back meanwhile; look again after them
                if not self.others_waiting():
                    time.sleep(min(self.linger_s - age, 0.02))
                    return None
        elif age < self.linger_s or waiting < length - offset:
            # Young records wait for company; an old backlog's last records go with the rest.
            waiting -= waiting % self.batch_size
        self.left -= waiting
        return [(raw, loads(raw), False) for raw in self.lane.read(self.client, offset, waiting)]

    def others_waiting(self) -> bool:
        """True when drain jobs of other lanes wait for a worker: then send now rather than linger.

        Looked up at most every 0.1 s: a lingering job asks every 20 ms.
        """
        now = time.monotonic()
        if now - self._looked >= 0.1:
            self._others = any(queue.count for queue in self.rq_queues)
            self._looked = now
        return self._others

    def release(self) -> bool:
        """Give the lane up when it is empty; False if records arrived meanwhile and we kept it."""
        return self.lane.release(self.client, self.token, self.delivery)

    def prepare(self, chunk: Chunk) -> None:
        """Check a chunk's order across lanes, translate what may go, keep each field's newest value,
        pack it; its requests join the window."""
        flight = Flight(chunk)
        going = self.ordering.check(flight)
        items: list[Item] = []
        settled = self.ctx.marks.settle(going, flight.ledger)  # a killed sender's marks (handlers/sent.py)
        for env in going:
            if env["id"] in settled:
                continue
            try:
                items.extend(to_items(env))
            except (KeyError, ValueError, TypeError) as exc:
                flight.ledger.fail(
                    env["id"], Dead(DeadReason.UNTRANSLATABLE, None, f"{type(exc).__name__}: {exc}")
                )
        items = self.ctx.watermarks.keep_newest(items)
        memory = self.ctx.unchanged
        if memory.remembering:
            memos = memory.memos(items)
            if memos:
                pending = {pair for other in self.flights for pair in other.pending()}
                items, dropped = memory.drop_unchanged(items, memos, pending=pending)
                flight.ledger.unchanged |= dropped.records
                flight.unchanged = dropped.fields
                for item in items:
                    if id(item) in memos:
                        flight.memos.setdefault(item.envelope["id"], []).append(memos[id(item)])
        held, first = 0, not self.window
        for one_round in plan(items, self.delivery, self.width, self.window.after):
            for request in one_round:
                users = request.users()
                held += self.window.holds(users)
                self.window.add(request, users)
                self.owner[request] = flight
                self.ordering.fence(request, flight)
                flight.open += 1
        self.flights.append(flight)
        if not first:  # with nothing before it, no request of a chunk waits: that says nothing of its users
            self.adjust_reach(held, flight.open)

    def adjust_reach(self, held: int, requests: int) -> None:
        """Reach further down the lane when most of a chunk's requests wait for earlier requests of their
        users; back towards a quarter window when few do."""
        if requests and held > WAITING_SHARE * requests:
            self.reach = min(CHUNK_SHARE, self.reach * 2)
        elif held < WAITING_SHARE * requests / 4:
            self.reach = max(1, self.reach // 2)

    def dispatch(self) -> None:
        """Send every waiting request that may go now, as far as senders are free."""
        for request in self.window.ready(self.width - len(self.flying), self.ordering.may_go):
            future = self.ctx.senders.submit(self.send, request)
            self.flying[future] = (self.owner.pop(request), request)
            future.add_done_callback(self.answered.put)

    def collect(self, timeout: float) -> None:
        """Take in the answers that came back (waiting up to `timeout` for the first).

        Each request's future puts itself on `answered` when it is done, so taking the answers in costs
        the same however many requests fly (`concurrent.futures.wait` visits every one, every turn).
        """
        if not self.flying:
            return
        try:
            done = [self.answered.get(timeout=timeout) if timeout > 0 else self.answered.get_nowait()]
        except queue.Empty:
            return
        while not self.answered.empty():
            done.append(self.answered.get_nowait())
        for future in done:
            flight, request = self.flying.pop(future)
            self.window.done(request)
            sent = future.result()  # a Redis error in a sender fails the job: nothing more committed
            for judgement in sent.judgements:
                flight.ledger.add(judgement)
            flight.tally.add(sent.tally)
            flight.open -= 1
            if sent.lease_lost:
                self.lost = True

    def abandon(self) -> None:
        """After an error: let the requests in flight come back (uncommitted): no sender outlives the job."""
        wait(self.flying)
        self.flying.clear()

    def commit_done(self) -> int:
        """Commit every chunk at the front whose requests are all answered, oldest first; how many."""
        count = 0
        while self.flights and self.flights[0].open == 0 and not self.lost:
            flight = self.flights.popleft()
            if not commit(self.ctx, self.lane, self.token, flight, self.lease_lock):
                self.lost = True
                break
            count += 1
        return count

    def send(self, request: BrazeRequest) -> Sent:
        """Send one request (in a sender thread) and what Braze's answers mean for its items.

        Halves of a batch Braze refused are sent here too, one after another: they hold the same
        users, who must not be in two requests at once.
        """
        sent = Sent()
        self.send_into(request, sent)
        return sent

    def send_into(self, request: BrazeRequest, sent: Sent) -> None:
        """Check the lease, take a place in the shared rate limit, send; then judge the answer.

        The lease is checked before each send (`fresh`: a check of the last FRESH_CHECK_S stands): a
        worker frozen past its lease must not send records that a new owner now holds (and may
        already have sent, with newer values after them). The rate limit (and a 429's pause) is the
        last gate before the send, so that a pause another sender has just set is seen (one of this
        process at once, another worker's within PAUSE_FRESH_S); if waiting for the window took a
        while, the lease is checked again, so the send still follows a fresh check.
        """
        family = request.items[0].family
        if not self.fresh():
            sent.lease_lost = True
            return
        wait_until = self.ctx.limiter.acquire(self.workspace, family)
        if wait_until is not None:
            sent.judgements.append(window_full(request.items, wait_until))
            sent.tally.waits[(family, "window")] += 1
            return
        if not self.fresh():
            sent.lease_lost = True
            return
        client = self.ctx.braze(self.workspace)
        answer: Answer | None = None
        verdict: Verdict
        self.ctx.marks.before(request)
        try:
            answer = client.send(request.method, request.path, request.data())
        except requests.RequestException as exc:
            verdict = classify_failure(exc)
            sent.tally.calls[(request.endpoint, type(exc).__name__)] += 1
        else:
            verdict = classify(answer)
            sent.tally.calls[(request.endpoint, str(answer.status))] += 1
        self.ctx.observe(self.workspace, request, answer, verdict)
        judgement = judge(request, verdict, now=time.time(), delivery=self.delivery)
        self.ctx.marks.after(judgement)
        if judgement.pause_until is not None:
            self.ctx.limiter.pause(self.workspace, family, judgement.pause_until)
            sent.tally.waits[(family, "braze")] += 1
        sent.judgements.append(judgement)
        for half in judgement.resend:
            for sub in pack(half, self.delivery):
                self.send_into(sub, sent)


def drain_lane(lane: str, token: str) -> dict[str, Any]:
    """RQ job: deliver a lane's records for a time slice or more (only the lease holder does anything).

    A Redis error (from the job's thread, a sender's, or the commit) stops the job: what is not
    committed stays in the lane and comes back when the lease expires. It is reported to the
    process's watch, which rides out an outage (handlers/outage.py), rather than raised into RQ.
    """
    ctx = context.current()
    drainer = Drainer(ctx, Lane(lane), token)
    try:
        return drainer.run()
    except redis.RedisError as exc:
        drainer.abandon()
        ctx.watch.refused(exc, "drain", lane=lane)
        return {"lane": lane, "stopped": redis_health.code(exc)}
