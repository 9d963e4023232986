"""Request headers lowered once (receiver/headers.py): any mapping of headers in, names in lower case out."""

from __future__ import annotations

from werkzeug.datastructures import Headers

from receiver.headers import Lowered, lowered


def test_names_are_lowered_and_values_kept() -> None:
    """A dict or werkzeug's Headers: every name in lower case, every value as it came."""
    for given in (
        {"Webhook-Id": "Msg_1", "X-TD-Write-Key": "Key"},
        Headers({"Webhook-Id": "Msg_1", "X-TD-Write-Key": "Key"}),
    ):
        assert lowered(given) == {"webhook-id": "Msg_1", "x-td-write-key": "Key"}


def test_headers_already_lowered_are_the_same_object() -> None:
    """Lowering what the edge lowered once costs nothing: the same object comes back."""
    once = lowered({"Authorization": "TD1 k"})
    assert isinstance(once, Lowered)
    assert lowered(once) is once
