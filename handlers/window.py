"""Which requests may be in flight at once: the window of a lane's drain job, as a pure rule.

Requests join the window in the order their records left the lane. A request may go when none of
the users it changes is in a request in flight, and none is in an earlier request still waiting to
go: so no two requests in flight at once carry updates for the same user, and each user's requests
reach Braze one at a time, in order. Requests of other users overtake it meanwhile.

`after` says which request (by the order they joined) last holds a user, so that the next chunk's
users can be packed by the request they wait for: then each new request waits for one earlier
request, not for many, and goes as soon as that one is answered.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R", bound=Hashable)


@dataclass
class Window(Generic[R]):
    """Requests waiting to go, in order, and the users of those in flight."""

    waiting: list[tuple[R, frozenset[str]]] = field(default_factory=list)
    busy: dict[str, R] = field(default_factory=dict)  # user -> the request in flight that holds them
    flying: dict[R, frozenset[str]] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)  # user -> number of the last request holding them
    numbers: dict[R, int] = field(default_factory=dict)  # request -> its number, in the order added
    added: int = 0  # requests added so far (the last one's number)

    def add(self, request: R, users: Iterable[str]) -> None:
        """A request whose records were taken after every request already added."""
        users = frozenset(users)
        self.added += 1
        number = self.numbers[request] = self.added
        for user in users:
            self.latest[user] = number
        self.waiting.append((request, users))

    def after(self, user: str) -> int:
        """The number of the last request (waiting or in flight) holding the user; 0 if none."""
        return self.latest.get(user, 0)

    def holds(self, users: Iterable[str]) -> bool:
        """True if a request of these users would wait for an earlier one (in flight or waiting)."""
        users = frozenset(users)
        if any(user in self.busy for user in users):
            return True
        return any(users & others for _, others in self.waiting)

    def ready(self, room: int, may_go: Callable[[R], bool] | None = None) -> list[R]:
        """Up to `room` waiting requests that may go now, in order; they are in flight from here on.

        `may_go` can hold a request back for a reason of its own (handlers/order.py's fences); it
        then blocks its users like any request that still waits.
        """
        out: list[R] = []
        if room <= 0 or not self.waiting:
            return out  # asked on every turn of the drain loop, mostly with no sender free
        blocked: set[str] = set()  # users of earlier requests that still wait
        kept: list[tuple[R, frozenset[str]]] = []
        busy = self.busy
        for at, (request, users) in enumerate(self.waiting):
            if len(out) == room:
                kept += self.waiting[at:]
                break
            free = blocked.isdisjoint(users) and busy.keys().isdisjoint(users)
            if free and (may_go is None or may_go(request)):
                out.append(request)
                self.flying[request] = users
                for user in users:
                    busy[user] = request
            else:
                kept.append((request, users))
                blocked |= users
        self.waiting = kept
        return out

    def done(self, request: R) -> None:
        """The request's answer is in (or it was never sent): its users are free again."""
        number = self.numbers.pop(request)
        for user in self.flying.pop(request):
            if self.busy.get(user) is request:
                del self.busy[user]
            if self.latest.get(user) == number:
                del self.latest[user]

    def __len__(self) -> int:
        """Requests waiting or in flight."""
        return len(self.waiting) + len(self.flying)
