"""The operator's pages in a real headless Chromium, against the app on a real HTTP server on loopback."""

from __future__ import annotations

import base64
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from braze_sim.server import Simulator
from relay.config import load_settings
from tests import chromium
from tests.helpers import ADMIN_KEY, BRAZE_KEY, create_app_for
from tests.test_pages import TD_HEADERS, plant_dead_letters

SCREENSHOTS = Path("/tmp")

pytestmark = chromium.needs_chromium


@pytest.fixture
def server(admin_app: Flask) -> Iterator[str]:
    """The admin-enabled app served by werkzeug on a free loopback port, in a thread."""
    with serving(admin_app) as url:
        yield url


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve an app with werkzeug on a free loopback port, in a thread; its URL."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="admin-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium sending the admin key as HTTP Basic on every request (a CDP header)."""
    driver = chromium.start(tmp_path / "chromium")
    try:
        credentials = base64.b64encode(f"ops:{ADMIN_KEY}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {credentials}"}}
        )
        yield driver
    finally:
        driver.quit()


def shoot(driver: webdriver.Chrome, name: str) -> None:
    """A screenshot of the whole page, beyond the window, to /tmp/admin-<name>.png."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"clip": clip, "captureBeyondViewport": True})
    (SCREENSHOTS / f"admin-{name}.png").write_bytes(base64.b64decode(shot["data"]))


def test_operator_replays_a_dead_letter_in_the_browser(
    admin_app: Flask,
    server: str,
    browser: webdriver.Chrome,
    drain: Callable[..., None],
    braze: Simulator,
) -> None:
    """Queue and dead-letter pages load; Replay (a row's button, a ticked box) flashes; a drain delivers."""
    records = [{"external_id": "web-u", "name": "clicked"}, {"external_id": "web-u", "name": "scrolled"}]
    plant_dead_letters(admin_app.test_client(), drain, braze, records)
    wait = WebDriverWait(browser, 15)

    browser.get(f"{server}/admin/rq/")
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "queues"), "relay-bulk"))
    shoot(browser, "rq")

    browser.get(f"{server}/admin/")
    assert "braze_rejected" in browser.find_element(By.TAG_NAME, "main").text
    shoot(browser, "overview")

    browser.get(f"{server}/admin/dead")
    row, other = browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")
    dead_id, other_id = row.get_attribute("data-id"), other.get_attribute("data-id")
    assert "braze_rejected" in row.text and "events" in row.text
    shoot(browser, "dead")

    row.find_element(By.LINK_TEXT, dead_id).click()
    wait.until(expected_conditions.title_contains(dead_id))
    assert '"external_id": "web-u"' in browser.find_element(By.TAG_NAME, "main").text
    shoot(browser, "dead-detail")

    browser.back()
    browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{dead_id}"] button[form="replay-one"]').click()
    flash = wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".flash")))
    assert flash.text == "replayed 1 record"
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")
    assert [remaining.get_attribute("data-id") for remaining in rows] == [other_id]
    shoot(browser, "replayed")

    browser.find_element(By.CSS_SELECTOR, f'input[type=checkbox][value="{other_id}"]').click()
    browser.find_element(By.XPATH, "//button[text()='Replay selected']").click()
    wait.until(expected_conditions.staleness_of(flash))  # the next page, with its own flash
    assert browser.find_element(By.CSS_SELECTOR, ".flash").text == "replayed 1 record"
    assert not browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")

    drain()
    delivered = sorted(event["name"] for event in braze.state.profile("web-u")["events"])
    assert delivered == ["clicked", "scrolled"]


def test_overview_charts_the_last_hours_deliveries(
    admin_app: Flask,
    server: str,
    browser: webdriver.Chrome,
    drain: Callable[..., None],
    braze: Simulator,
) -> None:
    """After 150 deliveries the overview draws both charts with that workload's figures.

    The delivered chart's bars add up to 150; the lag chart's bars, weighted by what each minute
    delivered, add up to the relay's own lag sum (relay_delivery_lag_seconds_sum in /metrics).
    """
    client = admin_app.test_client()
    records = [{"external_id": f"chart-{index % 7}", "name": "viewed"} for index in range(150)]
    for start in range(0, 150, 50):
        response = client.post(
            "/db/events", json={"records": records[start : start + 50]}, headers=TD_HEADERS
        )
        assert response.status_code == 200
    drain()
    metrics_text = client.get("/metrics").get_data(as_text=True)
    lag_sum = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("relay_delivery_lag_seconds_sum{")
    )

    browser.get(f"{server}/admin/")
    delivered = browser.find_element(By.CSS_SELECTOR, 'svg[data-chart="Delivered per minute"]')
    lag = browser.find_element(By.CSS_SELECTOR, 'svg[data-chart="Delivery lag per minute"]')
    shoot(browser, "overview-charts")
    delivered_bars = delivered.find_elements(By.CSS_SELECTOR, "rect.chart-bar")
    lag_bars = lag.find_elements(By.CSS_SELECTOR, "rect.chart-bar")
    assert len(delivered_bars) == len(lag_bars) == 60, "a bar a minute for the last hour"
    counts = [float(bar.get_attribute("data-value") or 0) for bar in delivered_bars]
    lags = [float(bar.get_attribute("data-value") or 0) for bar in lag_bars]
    assert sum(counts) == 150
    assert sum(count * mean for count, mean in zip(counts, lags, strict=True)) == pytest.approx(
        lag_sum, rel=1e-6
    )
    busy = [bar for bar, count in zip(delivered_bars, counts, strict=True) if count]
    assert busy and all(bar.rect["height"] > 0 for bar in busy), "the workload's bars are drawn"
    assert "150 delivered" in (busy[-1].find_element(By.TAG_NAME, "title").get_attribute("textContent") or "")
    assert "150 records in the last hour" in browser.find_element(By.TAG_NAME, "main").text


# Four Braze workspaces (one per API key variable), each with a track route and a consent route;
# with four track shards, that is twenty lanes named ws-<digest>:<family>[.<shard>].
WORKSPACE_ROUTES = "".join(
    f"""
[routes.events_of_workspace_{n}]
database = "ws{n}"
table = "events"
mode = "user_track"
track_record_type = "custom_events"
braze_endpoint = "{{endpoint}}"
braze_api_key_env = "BRAZE_API_KEY_WORKSPACE_{n}"

[routes.consent_of_workspace_{n}]
database = "ws{n}"
table = "consent"
mode = "user_subscription"
braze_endpoint = "{{endpoint}}"
braze_api_key_env = "BRAZE_API_KEY_WORKSPACE_{n}"
"""
    for n in range(4)
)

# Every table of the page against the content box of the card holding it (CSS pixels).
TABLES_IN_CARDS = """
return [...document.querySelectorAll('section.card table')].map(table => {
  const card = table.closest('section.card'), style = getComputedStyle(card);
  const room = card.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {card: card.querySelector('h2').textContent, table: table.scrollWidth, room: room};
});
"""


def test_overview_tables_fit_their_cards_at_1400_px(
    relay_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    braze: Simulator,
    browser: webdriver.Chrome,
) -> None:
    """With twenty lanes in four workspaces, no table of the overview is wider than its card in a
    1400 px window (the Lanes table spilled out of its card)."""
    routes = tmp_path / "workspaces.toml"
    routes.write_text(WORKSPACE_ROUTES.replace("{endpoint}", braze.url))
    for name, value in {
        "RELAY_CONFIG": str(routes),
        "RELAY_TRACK_SHARDS": "4",
        "RELAY_ADMIN_KEYS": ADMIN_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    for n in range(4):
        monkeypatch.setenv(f"BRAZE_API_KEY_WORKSPACE_{n}", BRAZE_KEY)
    app = create_app_for(load_settings())
    client = app.test_client()
    for n in range(4):
        events = [{"external_id": f"user-{user}", "name": "viewed"} for user in range(40)]
        assert client.post(f"/ws{n}/events", json={"records": events}, headers=TD_HEADERS).status_code == 200
        consent = {
            "external_id": "user-0",
            "subscription_group_id": "group-1",
            "subscription_state": "subscribed",
        }
        assert (
            client.post(f"/ws{n}/consent", json={"records": [consent]}, headers=TD_HEADERS).status_code == 200
        )

    with serving(app) as url:
        browser.get(f"{url}/admin/")
        assert browser.execute_script("return window.innerWidth") == 1400
        lanes = browser.find_elements(By.CSS_SELECTOR, "section.card td.mono")
        assert (
            sum(":track." in lane.text for lane in lanes) == 16
            and sum(":consent" in lane.text for lane in lanes) == 4
        )
        shoot(browser, "overview-lanes")
        measured = browser.execute_script(TABLES_IN_CARDS)
    assert "Lanes" in {found["card"] for found in measured}
    assert [found for found in measured if found["table"] > found["room"]] == [], measured
