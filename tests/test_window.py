"""Which requests may be in flight at once (handlers/window.py): pure, exact.

docs/delivery.md, rule "Several requests in flight": no two requests in
flight at once carry updates for the same user, and each user's requests go in order.
"""

from __future__ import annotations

from handlers.window import Window


def window(*requests: tuple[str, set[str]]) -> Window[str]:
    """A window holding these (name, users) requests, in order."""
    out: Window[str] = Window()
    for name, users in requests:
        out.add(name, users)
    return out


def test_requests_of_different_users_go_together() -> None:
    """Up to the room given, in order."""
    w = window(("a", {"u1"}), ("b", {"u2"}), ("c", {"u3"}))
    assert w.ready(2) == ["a", "b"]
    assert w.ready(5) == ["c"]
    assert w.ready(5) == []


def test_a_user_in_flight_holds_back_their_next_request() -> None:
    """Rule "no two requests in flight carry updates for the same user"; others overtake it."""
    w = window(("a", {"u1", "u2"}), ("b", {"u2"}), ("c", {"u3"}))
    assert w.ready(8) == ["a", "c"]
    assert w.ready(8) == []
    w.done("a")
    assert w.ready(8) == ["b"]


def test_a_waiting_request_keeps_its_users_order() -> None:
    """A request that waits holds back later requests of its users, even if their other users are free."""
    w = window(("a", {"u1"}), ("b", {"u1", "u2"}), ("c", {"u2"}))
    assert w.ready(8) == ["a"]  # c must not overtake b for u2
    w.done("a")
    assert w.ready(8) == ["b"]
    w.done("b")
    assert w.ready(8) == ["c"]


def test_room_held_back_keeps_order_too() -> None:
    """No room for the first request of a user: their later request does not jump ahead."""
    w = window(("a", {"u1"}), ("b", {"u2"}), ("c", {"u2"}))
    assert w.ready(1) == ["a"]
    assert w.ready(1) == ["b"]
    assert w.ready(1) == []
    w.done("b")
    assert w.ready(1) == ["c"]


def test_len_counts_waiting_and_flying() -> None:
    """len(): requests waiting or in flight."""
    w = window(("a", {"u1"}), ("b", {"u1"}))
    w.ready(8)
    assert len(w) == 2
    w.done("a")
    assert len(w) == 1


def test_after_numbers_the_last_request_holding_a_user_until_it_is_answered() -> None:
    """`after(user)`: the number (order of joining) of the last request that holds the user, waiting or
    in flight; 0 once that request is answered, or for a user no request holds."""
    w = window(("a", {"u1", "u2"}), ("b", {"u2"}), ("c", {"u3"}))
    assert [w.after(user) for user in ("u1", "u2", "u3", "u4")] == [1, 2, 3, 0]
    assert w.ready(8) == ["a", "c"]
    w.done("a")
    assert [w.after(user) for user in ("u1", "u2")] == [0, 2]  # b still holds u2
    assert w.ready(8) == ["b"]
    w.done("b")
    w.done("c")
    assert w.latest == {} and w.numbers == {}  # nothing kept for users no request holds
