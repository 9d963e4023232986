"""Catalog items end to end (edge -> real Redis -> worker -> simulator over HTTP): upserts and deletes of
the items of the catalog a route names, by Braze's item rules; request bodies checked against the
examples of Braze's catalog pages, cited in each test."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from relay import deadletters, metrics
from relay.config import load_settings
from relay.errors import ConfigError
from tests.helpers import WORKSPACES, WRITE_KEY

HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}
PATH = "/catalogs/restaurants/items"
T1, T2 = 1_764_000_000, 1_764_000_060
# https://www.braze.com/docs/api/endpoints/catalogs/catalog_items/asynchronous/put_update_catalog_items/
# "Example request".
RESTAURANT_1 = {
    "id": "restaurant1",
    "Name": "Restaurant",
    "Loyalty_Program": False,
    "Location": {"Latitude": 33.6112, "Longitude": -117.8711},
    "Top_Dishes": ["Hamburger", "Deluxe Cheeseburger"],
    "Open_Time": "2021-09-03T09:03:19.967+00:00",
}
RESTAURANT_3 = {
    "id": "restaurant3",
    "City": "San Francisco",
    "Rating": 2,
    "Top_Dishes": ["Hot Dog", "French Fries"],
}
FIELDS = ["Name", "Loyalty_Program", "Location", "Top_Dishes", "Open_Time", "City", "Rating"]


@pytest.fixture
def restaurants(braze: Simulator) -> Simulator:
    """The simulator with the `restaurants` catalog of Braze's examples."""
    braze.catalogs.create("restaurants", FIELDS)
    return braze


def ingest(client: FlaskClient, records: list[dict[str, Any]], status: int = 200) -> Any:
    """Send records to the catalog route through the TD ingestion endpoint; require `status`."""
    response = client.post("/db/restaurants", json={"records": records}, headers=HEADERS)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def calls(braze: Simulator) -> list[tuple[str, int, dict[str, Any]]]:
    """(method, status, body) of each request on the catalog's items."""
    return [
        (entry["method"], entry["status"], entry["body"]) for entry in braze.requests if entry["path"] == PATH
    ]


def dead(client: redis.Redis) -> list[dict[str, Any]]:
    """Every dead letter."""
    return list(deadletters.iter_entries(client, WORKSPACES))


def test_upsert_is_brazes_example(
    client: FlaskClient, drain: Callable[..., None], restaurants: Simulator
) -> None:
    """put_update_catalog_items "Example request": PUT with both items as Braze shows them, answered 202."""
    ingest(client, [RESTAURANT_1, RESTAURANT_3])
    drain()
    assert calls(restaurants) == [("PUT", 202, {"items": [RESTAURANT_1, RESTAURANT_3]})]
    assert restaurants.catalogs.items("restaurants") == {
        "restaurant1": RESTAURANT_1,
        "restaurant3": RESTAURANT_3,
    }


def test_delete_is_brazes_example(
    client: FlaskClient, drain: Callable[..., None], restaurants: Simulator
) -> None:
    """https://www.braze.com/docs/api/endpoints/catalogs/catalog_items/asynchronous/delete_catalog_items_bulk/
    "Example request": `_deleted` as JSON true, "true" or 1 sends the ids with DELETE, answered 202."""
    ingest(client, [RESTAURANT_1, RESTAURANT_3, {"id": "restaurant2", "City": "Oslo"}])
    ingest(
        client,
        [
            {"id": "restaurant1", "_deleted": True},
            {"id": "restaurant2", "_deleted": "true"},
            {"id": "restaurant3", "_deleted": 1},
        ],
    )
    drain()
    deletes = [call for call in calls(restaurants) if call[0] == "DELETE"]
    assert deletes == [
        ("DELETE", 202, {"items": [{"id": "restaurant1"}, {"id": "restaurant2"}, {"id": "restaurant3"}]})
    ]
    assert restaurants.catalogs.items("restaurants") == {}


def test_at_most_50_items_per_request(
    client: FlaskClient, drain: Callable[..., None], restaurants: Simulator
) -> None:
    """ "Each request can support up to 50 catalog items" (put_update_catalog_items): 120 make 50, 50, 20."""
    ingest(client, [{"id": f"r{n}", "Rating": n} for n in range(120)])
    drain()
    sizes = [len(body["items"]) for _, _, body in calls(restaurants)]
    assert sorted(sizes) == [20, 50, 50]  # sent at once (no item in two): they arrive in any order


def test_an_items_newest_record_wins(
    client: FlaskClient, drain: Callable[..., None], restaurants: Simulator, clean_redis: redis.Redis
) -> None:
    """An upsert older (by `time`) than one already sent for the item is not sent: superseded."""
    ingest(client, [{"id": "restaurant1", "Rating": 5, "time": T2}])
    drain()
    ingest(client, [{"id": "restaurant1", "Rating": 1, "time": T1}])
    drain()
    assert restaurants.catalogs.items("restaurants") == {"restaurant1": {"id": "restaurant1", "Rating": 5}}
    assert len(calls(restaurants)) == 1
    counted = metrics.read(clean_redis, WORKSPACES)
    assert counted[(metrics.SUPERSEDED.name, (("route", "restaurants"),))] == 1


def test_an_item_braze_refuses_is_dead_lettered_alone(
    client: FlaskClient, drain: Callable[..., None], restaurants: Simulator, clean_redis: redis.Redis
) -> None:
    """Braze refuses a whole request for one item's field the catalog does not have (400 invalid-fields,
    https://www.braze.com/docs/api/endpoints/catalogs/catalog_items/asynchronous/post_create_catalog_items_bulk/,
    Troubleshooting): halved until that item stands alone, dead-lettered with Braze's message."""
    items = [{"id": f"r{n}", "Rating": n} for n in range(5)]
    items.insert(2, {"id": "r-bad", "Chef": "unknown field"})
    ingest(client, items)
    drain()
    (letter,) = dead(clean_redis)
    assert letter["envelope"]["rec"]["id"] == "r-bad"
    assert letter["status"] == 400 and "invalid-fields" in letter["message"]
    assert set(restaurants.catalogs.items("restaurants") or {}) == {f"r{n}" for n in range(5)}


def test_an_unknown_catalog_dead_letters_its_items(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A catalog Braze does not have answers 404 catalog-not-found: dead-lettered at once, with it."""
    ingest(client, [RESTAURANT_3])
    drain()
    (letter,) = dead(clean_redis)
    assert letter["reason"] == "braze_rejected" and letter["status"] == 404


def test_a_429_pauses_the_catalog_family(
    client: FlaskClient, drain: Callable[..., None], restaurants: Simulator, clean_redis: redis.Redis
) -> None:
    """A 429 (https://www.braze.com/docs/api/api_limits/) pauses the catalog family until its reset; the
    items then go, nothing dead-lettered."""
    restaurants.faults.rate_limit_next = 1
    ingest(client, [RESTAURANT_3])
    drain()
    assert [status for _, status, _ in calls(restaurants)] == [429, 202]
    assert dead(clean_redis) == []
    counted = metrics.read(clean_redis, WORKSPACES)
    assert counted[(metrics.RATE_LIMITED.name, (("family", "catalog"), ("source", "braze")))] == 1


def test_a_td_export_of_a_product_table(
    client: FlaskClient, drain: Callable[..., None], restaurants: Simulator
) -> None:
    """A TD export (docs/td-exports.md): numeric ids become strings, `_deleted` "false" upserts."""
    body = {
        "column_names": ["id", "City", "Rating", "_deleted", "time"],
        "column_types": ["long", "string", "long", "string", "long"],
        "data": [[1001, "Oslo", 4, "false", T1], [1002, "Bergen", 3, "false", T1]],
    }
    basic = base64.b64encode(f"td:{WRITE_KEY}".encode()).decode()
    response = client.put("/export/restaurants", json=body, headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.get_json()
    drain()
    assert restaurants.catalogs.items("restaurants") == {
        "1001": {"id": "1001", "City": "Oslo", "Rating": 4},
        "1002": {"id": "1002", "City": "Bergen", "Rating": 3},
    }


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"Rating": 1}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "x" * 251}, "id"),
        ({"id": "r1", "bad.name": 1}, "bad.name"),
        ({"id": "r1", "Notes": "x" * 5001}, "Notes"),
        ({"id": "r1", "Location": {"$lat": 1}}, "Location"),
        ({"id": "r1", "_deleted": "maybe"}, "_deleted"),
    ],
    ids=[
        "no id",
        "id with a space",
        "id over 250",
        "field name with a dot",
        "value over 5000",
        "$ key",
        "_deleted",
    ],
)
def test_items_braze_would_refuse_are_422_naming_the_field(
    client: FlaskClient, record: dict[str, Any], field: str
) -> None:
    """Braze's item rules (post_create_catalog_items_bulk, Troubleshooting) are checked at the edge."""
    answer = ingest(client, [record], status=422)
    assert field in answer["errors"]["records"]["0"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('mode = "catalog_items"', "key 'catalog': required when mode is catalog_items"),
        ('mode = "catalog_items"\ncatalog = "my catalog"', "key 'catalog': a Braze catalog name"),
        (
            'mode = "user_delete"\ncatalog = "products"',
            "key 'catalog': only allowed when mode is catalog_items",
        ),
    ],
)
def test_the_routes_catalog_is_checked_at_start(
    tmp_path: Path, relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table: str, message: str
) -> None:
    """The route's `catalog` follows Braze's naming rules (https://www.braze.com/docs/api/endpoints/
    catalogs/catalog_management/synchronous/post_create_catalog/, Troubleshooting), checked at start."""
    routes = tmp_path / "catalog.toml"
    routes.write_text(f"[routes.items]\n{table}\n")
    monkeypatch.setenv("RELAY_CONFIG", str(routes))
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert message in str(raised.value)
