"""/metrics after a known workload: exact counts, whatever process wrote them."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from braze_sim.server import Simulator
from tests.helpers import WRITE_KEY

TD = {"Authorization": f"TD1 {WRITE_KEY}"}


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (sample name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_say_their_text_format_and_charset_once(client: FlaskClient) -> None:
    """/metrics is typed as the Prometheus text format it is written in (0.0.4), its charset named once."""
    response = client.get("/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_counts_after_a_known_workload(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Received, accepted, rejected, Braze requests, delivered, dead-lettered and lag add up exactly."""
    braze.faults.fail_next = 1
    braze.faults.reject_item = lambda array, obj: "refused" if obj.get("name") == "bad" else None
    events = [{"external_id": "m1", "name": name} for name in ("a", "b", "bad")]
    assert client.post("/db/events", json={"records": events}, headers=TD).status_code == 200
    refused = [{"external_id": "m1", "name": "ok"}, {"name": "no identifier"}]
    assert client.post("/db/events", json={"records": refused}, headers=TD).status_code == 422
    skipped = [{"external_id": "m2", "plan": "gold"}, {"plan": "no identifier"}]
    assert client.post("/db/profiles_skip", json={"records": skipped}, headers=TD).status_code == 200
    drain()
    samples = scrape(client)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("relay_records_received_total", route="events") == 5
    assert value("relay_records_accepted_total", route="events") == 3
    assert value("relay_records_rejected_total", route="events", reason="invalid") == 1
    assert value("relay_records_rejected_total", route="events", reason="request_refused") == 1
    assert value("relay_records_received_total", route="profiles_skip") == 2
    assert value("relay_records_accepted_total", route="profiles_skip") == 1
    assert value("relay_records_rejected_total", route="profiles_skip", reason="invalid") == 1
    assert value("relay_records_dead_lettered_total", route="profiles_skip", reason="invalid") == 1
    # The first track request met a 500 and was retried as one batch (with the attributes record).
    assert value("relay_braze_requests_total", endpoint="/users/track", status="500") == 1
    assert value("relay_braze_requests_total", endpoint="/users/track", status="201") == 1
    assert value("relay_retries_total", route="events", reason="Braze answered 500") == 3
    assert value("relay_records_delivered_total", route="events") == 2
    assert value("relay_records_delivered_total", route="profiles_skip") == 1
    assert value("relay_records_dead_lettered_total", route="events", reason="braze_rejected_item") == 1
    assert value("relay_delivery_lag_seconds_count", lane="default:track") == 3
    assert value("relay_delivery_lag_seconds_bucket", lane="default:track", le="+Inf") == 3
    assert value("relay_queue_depth", lane="default:track") == 0
    assert value("relay_dead_letters") == 2


def test_429_waits_are_counted(client: FlaskClient, drain: Callable[..., None], braze: Simulator) -> None:
    """A 429 from Braze shows as a rate-limited count for its family."""
    braze.faults.rate_limit_next = 1
    braze.faults.rate_limit_reset_s = 0.5
    assert (
        client.post(
            "/db/events", json={"records": [{"external_id": "m3", "name": "x"}]}, headers=TD
        ).status_code
        == 200
    )
    drain()
    samples = scrape(client)
    assert samples[("relay_rate_limited_total", (("family", "track"), ("source", "braze")))] == 1
    assert samples[("relay_braze_requests_total", (("endpoint", "/users/track"), ("status", "429")))] == 1
