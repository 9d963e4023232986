"""One simulated user profile, the identifiers that name it, and how two profiles fold into one.

An identifier is a pair `(kind, value)`: ("external_id", "u1"), ("braze_id", "0…1"),
("user_alias", (alias_name, alias_label)), ("email", "a@b.c") or ("phone", "+15550100").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

Identifier = tuple[str, Any]
# An identifier with the `prioritization` that picks one of several users sharing an email or phone.
Target = tuple[Identifier, "list[str] | None"]
# (array name, identifier, object) in the order Braze applies them: attributes, events, purchases.
TrackItem = tuple[str, Identifier, dict[str, Any]]
IDENTIFIER_KINDS = ("external_id", "braze_id", "user_alias", "email", "phone")


@dataclass
class Profile:
    """One simulated user; `touched` orders profiles for most/least_recently_updated."""

    braze_id: str
    external_id: str | None = None
    deprecated_ids: list[str] = field(default_factory=list)  # left by /users/external_ids/rename
    aliases: list[tuple[str, str]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    email_subscribe: str | None = None
    push_subscribe: str | None = None
    subscription_groups: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    purchases: list[dict[str, Any]] = field(default_factory=list)
    touched: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe deep copy."""
        return copy.deepcopy(
            {
                "braze_id": self.braze_id,
                "external_id": self.external_id,
                "deprecated_external_ids": self.deprecated_ids,
                "user_aliases": [alias_dict(alias) for alias in self.aliases],
                "attributes": self.attributes,
                "email_subscribe": self.email_subscribe,
                "push_subscribe": self.push_subscribe,
                "subscription_groups": self.subscription_groups,
                "events": self.events,
                "purchases": self.purchases,
            }
        )

    def fold_in(self, other: Profile) -> None:
        """Take what `other` has and this profile lacks; events and purchases add up."""
        # The kept profile's values win (Braze's merge fills gaps only).
        for key, value in other.attributes.items():
            self.attributes.setdefault(key, value)
        self.email_subscribe = self.email_subscribe or other.email_subscribe
        self.push_subscribe = self.push_subscribe or other.push_subscribe
        self.subscription_groups = {**other.subscription_groups, **self.subscription_groups}
        self.events.extend(other.events)
        self.purchases.extend(other.purchases)


def alias_dict(alias: tuple[str, str]) -> dict[str, str]:
    """The JSON form of an alias pair."""
    return {"alias_name": alias[0], "alias_label": alias[1]}


def identifier(**one: Any) -> Identifier:
    """Build an identifier from exactly one keyword; user_alias may be a dict or a (name, label) pair."""
    if len(one) != 1:
        raise TypeError(f"give exactly one identifier, got {sorted(one)}")
    ((kind, value),) = one.items()
    if kind not in IDENTIFIER_KINDS:
        raise TypeError(f"unknown identifier {kind!r}; known: {', '.join(IDENTIFIER_KINDS)}")
    if kind == "user_alias":
        value = (value["alias_name"], value["alias_label"]) if isinstance(value, dict) else tuple(value)
    return kind, value


def shown(ident: Identifier) -> Any:
    """An identifier's value as JSON (aliases become objects)."""
    kind, value = ident
    return alias_dict(value) if kind == "user_alias" else value


def contact_key(kind: str, value: str) -> str:
    """How emails and phones are compared: emails case-insensitively, phones as given (E.164)."""
    return value.lower() if kind == "email" else value
