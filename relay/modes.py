"""The relay's vocabulary: closed sets as enums, and one registry entry per mode.

A *mode* is what a route's table in the routes file says (`mode`, and `track_record_type` for
`user_track`); it decides the record *kind* (what a record becomes in Braze). A kind travels in one
*lane family* (the lane and worker batch it shares with kinds sent to the same Braze calls), and
each Braze *endpoint* counts against one *rate-limit family*. Every record ends in one *outcome*.

Adding a mode is one `Mode` entry below, plus the behaviour that is new: its record schema
(`receiver/records/schemas.py`, registered with `@record_schema(Kind.X)`) and its translator
(`handlers/translate.py`, `@translator(Kind.X)`). Both registries are checked against `Kind` when
their module loads, so a kind without a schema or translator stops every process at start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar


class Kind(StrEnum):
    """What a record becomes in Braze (kept in each queued record's envelope as `kind`)."""

    EVENTS = "events"
    PURCHASES = "purchases"
    ATTRIBUTES = "attributes"
    ALIAS = "alias"
    IDENTIFY = "identify"
    DELETE = "delete"
    CONSENT = "consent"
    MERGE = "merge"
    EXTERNAL_ID_RENAME = "external_id_rename"
    EXTERNAL_ID_REMOVE = "external_id_remove"
    ALIAS_UPDATE = "alias_update"
    CATALOG = "catalog_items"

    @classmethod
    def _missing_(cls, value: object) -> Kind | None:
        # Records queued before the rename (`subscription`) still read as consent.
        return cls.CONSENT if value == "subscription" else None


def kind_of(value: str) -> Kind:
    """The kind an envelope names, by a dict look-up (it runs for every record delivered)."""
    return _KINDS.get(value) or Kind(value)


_KINDS = {kind.value: kind for kind in Kind}


class LaneFamily(StrEnum):
    """The family of Braze calls a lane carries: one list of records, one batch, one owner at a time.

    Calls whose relative order matters for one user share a lane, which keeps it: an alias's creation
    and its update (`alias`), identifies and merges, which both join two identifiers (`identify`), an
    external id's rename and the removal of the id it deprecated (`external_id`).
    """

    TRACK = "track"
    ALIAS = "alias"
    IDENTIFY = "identify"
    DELETE = "delete"
    CONSENT = "consent"
    EXTERNAL_ID = "external_id"
    CATALOG = "catalog"


class RateFamily(StrEnum):
    """Braze's rate-limit families: endpoints that share one request window per workspace."""

    # https://www.braze.com/docs/api/api_limits/
    TRACK = "track"  # /users/track: 3,000 per 3 s
    USERS = "users"  # alias/new, alias/update, identify, delete, merge: 20,000 per minute, shared
    # Consent calls to subscription/status/set, v1 and v2: 5,000 per minute. Its value is Braze's name
    # for the family: the metric label (family="subscription") and the rate-limit keys keep it.
    CONSENT = "subscription"
    RENAME = "rename"  # /users/external_ids/rename: 1,000 per minute
    REMOVE = "remove"  # /users/external_ids/remove: 1,000 per minute
    CATALOG = "catalog"  # the asynchronous catalog item endpoints: 16,000 per minute, shared
    DEFAULT = "default"  # every other endpoint (/email/status): 250,000 per hour


class Endpoint(StrEnum):
    """The Braze REST endpoints the relay calls."""

    TRACK = "/users/track"
    ALIAS = "/users/alias/new"
    IDENTIFY = "/users/identify"
    DELETE = "/users/delete"
    SUBSCRIPTION = "/v2/subscription/status/set"
    EMAIL_STATUS = "/email/status"
    MERGE = "/users/merge"
    ALIAS_UPDATE = "/users/alias/update"
    RENAME = "/users/external_ids/rename"
    REMOVE = "/users/external_ids/remove"
    CATALOG_ITEMS = "/catalogs/{catalog_name}/items"  # the route's catalog goes in the path

    @property
    def rate_family(self) -> RateFamily:
        """The rate-limit family this endpoint counts against."""
        return _RATE_FAMILY[self]


_RATE_FAMILY = {
    Endpoint.TRACK: RateFamily.TRACK,
    Endpoint.ALIAS: RateFamily.USERS,
    Endpoint.IDENTIFY: RateFamily.USERS,
    Endpoint.DELETE: RateFamily.USERS,
    Endpoint.SUBSCRIPTION: RateFamily.CONSENT,
    Endpoint.EMAIL_STATUS: RateFamily.DEFAULT,
    Endpoint.MERGE: RateFamily.USERS,
    Endpoint.ALIAS_UPDATE: RateFamily.USERS,
    Endpoint.RENAME: RateFamily.RENAME,
    Endpoint.REMOVE: RateFamily.REMOVE,
    Endpoint.CATALOG_ITEMS: RateFamily.CATALOG,
}


class Outcome(StrEnum):
    """Where a record accepted at the edge ends (or waits): exactly one of these."""

    DELIVERED = "delivered"  # Braze took it (a 2xx that did not name it in `errors`)
    SUPERSEDED = "superseded"  # every field it set was already newer in Braze: nothing to send
    UNCHANGED = "unchanged"  # every value it set Braze already has from us (skip_unchanged): not sent
    RETRY = "retry"  # waits in its lane's retry set for another attempt
    DEAD_LETTERED = "dead_lettered"  # in the dead-letter store, with its reason


class DeadReason(StrEnum):
    """Why a record is in the dead-letter store."""

    INVALID = "invalid"  # refused at the edge (a route with skip_on_invalid_records)
    BRAZE_REJECTED = "braze_rejected"  # Braze refused the request (4xx), the record alone
    BRAZE_REJECTED_ITEM = "braze_rejected_item"  # named in the `errors` of a 2xx
    AMBIGUOUS = "ambiguous"  # an event or purchase sent with no answer: Braze may hold it
    RETRIES_EXHAUSTED = "retries_exhausted"  # 5xx or no answer for all its attempts
    UNTRANSLATABLE = "untranslatable"  # could not be made into a Braze object


class AuditEvent(StrEnum):
    """The consent audit trail's events for one consent record."""

    RECEIVED = "received"
    CONFIRMED = "confirmed"
    RETRYING = "retrying"
    SUPERSEDED = "superseded"
    DEAD_LETTERED = "dead_lettered"


TEST_USER = "braze-relay-test-user"


@dataclass(frozen=True)
class Mode:
    """One mode of the routes file and everything that follows from it."""

    kind: Kind
    mode: str  # the routes file's `mode`
    track_record_type: str | None  # and its `track_record_type` (user_track only)
    lane: LaneFamily
    openapi_name: str  # the record's component in /openapi.json
    sample: Mapping[str, Any] = field(default_factory=dict)  # `send-test`'s record
    # May a route of this mode take records from web pages (`allowed_origins`)? Their key is public,
    # so a mode that deletes users or attaches profiles to an external id must say no (the default).
    from_pages: bool = False
    # Order across lanes (docs/design.md "Order across calls"). `gate`: a record of this mode is
    # one that later records naming any identifier it names wait for, until Braze has answered it
    # (an alias creation, an identify, a delete). `erases`: records of its identifiers accepted
    # before it and not yet sent are not sent at all (a delete: they would re-create the profile).
    # `links`: it ties its identifiers from then on (an identify), so a later gate of one holds
    # records of the other too.
    gate: bool = False
    erases: bool = False
    links: bool = False


MODES: tuple[Mode, ...] = (
    Mode(
        Kind.EVENTS,
        "user_track",
        "custom_events",
        LaneFamily.TRACK,
        "EventRecord",
        {"external_id": TEST_USER, "name": "braze_relay_test"},
        from_pages=True,
    ),
    Mode(
        Kind.PURCHASES,
        "user_track",
        "purchases",
        LaneFamily.TRACK,
        "PurchaseRecord",
        {"external_id": TEST_USER, "product_id": "braze-relay-test", "currency": "USD", "price": 0},
        from_pages=True,
    ),
    Mode(
        Kind.ATTRIBUTES,
        "user_track",
        "user_profile_attributes",
        LaneFamily.TRACK,
        "AttributesRecord",
        {"external_id": TEST_USER, "braze_relay_test": True},
        from_pages=True,
    ),
    Mode(
        Kind.ALIAS,
        "user_new_alias",
        None,
        LaneFamily.ALIAS,
        "AliasRecord",
        {"alias_name": TEST_USER, "alias_label": "braze_relay_test"},
        gate=True,
    ),
    Mode(
        Kind.IDENTIFY,
        "user_identifying",
        None,
        LaneFamily.IDENTIFY,
        "IdentifyRecord",
        {"external_id": TEST_USER, "alias_name": TEST_USER, "alias_label": "braze_relay_test"},
        gate=True,
        links=True,
    ),
    Mode(
        Kind.DELETE,
        "user_delete",
        None,
        LaneFamily.DELETE,
        "DeleteRecord",
        {"external_id": TEST_USER},
        gate=True,
        erases=True,
    ),
    Mode(
        Kind.CONSENT,
        "user_subscription",
        None,
        LaneFamily.CONSENT,
        "SubscriptionRecord",
        {"external_id": TEST_USER, "push_subscribe": "subscribed"},
        from_pages=True,
    ),
    # A merge ties its two identifiers from then on (links). It does not erase: `erases` would drop
    # the not-yet-sent records of both its identifiers, the kept user's too.
    Mode(
        Kind.MERGE,
        "user_merge",
        None,
        LaneFamily.IDENTIFY,
        "MergeRecord",
        {"merge_external_id": f"{TEST_USER}-duplicate", "keep_external_id": TEST_USER},
        gate=True,
        links=True,
    ),
    Mode(
        Kind.EXTERNAL_ID_RENAME,
        "external_id_rename",
        None,
        LaneFamily.EXTERNAL_ID,
        "ExternalIdRenameRecord",
        {"current_external_id": f"{TEST_USER}-old-id", "new_external_id": f"{TEST_USER}-new-id"},
        gate=True,
    ),
    Mode(
        Kind.EXTERNAL_ID_REMOVE,
        "external_id_remove",
        None,
        LaneFamily.EXTERNAL_ID,
        "ExternalIdRemoveRecord",
        {"external_id": f"{TEST_USER}-old-id"},
        gate=True,
    ),
    Mode(
        Kind.ALIAS_UPDATE,
        "alias_update",
        None,
        LaneFamily.ALIAS,
        "AliasUpdateRecord",
        {"alias_label": "braze_relay_test", "old_alias_name": TEST_USER, "new_alias_name": f"{TEST_USER}-2"},
        gate=True,
    ),
    # Catalog items are not users: nothing orders across lanes for them.
    Mode(
        Kind.CATALOG,
        "catalog_items",
        None,
        LaneFamily.CATALOG,
        "CatalogItemRecord",
        {"id": "braze-relay-test"},
    ),
)
BY_KIND: dict[Kind, Mode] = {mode.kind: mode for mode in MODES}
# Kinds that destroy or join profiles, or change consent: their routes should not share credentials.
SENSITIVE = frozenset(
    {Kind.DELETE, Kind.CONSENT, Kind.MERGE, Kind.EXTERNAL_ID_RENAME, Kind.EXTERNAL_ID_REMOVE}
)
ROUTE_MODES = tuple(dict.fromkeys(mode.mode for mode in MODES))  # the routes file's `mode` values
TRACK_TYPES = tuple(mode.track_record_type for mode in MODES if mode.track_record_type)
TRACK_TYPE_MODES = frozenset(mode.mode for mode in MODES if mode.track_record_type)  # user_track


def mode_of(mode: str, track_record_type: str | None = None) -> Mode:
    """The registry entry of a routes-file mode (KeyError for one that does not exist)."""
    for entry in MODES:
        if entry.mode == mode and (
            entry.track_record_type is None or entry.track_record_type == track_record_type
        ):
            return entry
    raise KeyError((mode, track_record_type))


T = TypeVar("T")


class KindRegistry(dict[Kind, T]):
    """A table filled by a decorator, one entry per kind, checked complete with `complete()`."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, kind: Kind) -> Callable[[T], T]:
        """Decorator: this object is the `what` of `kind`."""

        def add(obj: T) -> T:
            if kind in self:
                raise ValueError(f"two {self.what}s for kind {kind}")
            self[kind] = obj
            return obj

        return add

    def complete(self) -> None:
        """Raise unless every kind has its entry (called once the defining module has loaded)."""
        missing = [kind.value for kind in Kind if kind not in self]
        if missing:
            raise RuntimeError(f"no {self.what} for kind(s) {', '.join(missing)}")
