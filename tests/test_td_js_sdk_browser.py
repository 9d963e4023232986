"""TD's real browser SDK in a real Chromium, on a page of another origin, through gunicorn and a worker.

The page is the sandbox's demo page (`python -m sdk_demo`, as Procfile.sandbox starts it) on a port
of its own, so its origin differs from the relay's; it loads td-js-sdk 4.4.3 as vendored from npm
(sdk_demo/static/td-js-sdk/td.min.js, which sets `window.Treasure`). The tests call the SDK's own
`addRecord` and `trackEvent` with `endpoint` set to the relay, and click the demo's buttons. A second
copy of the page on another port is an origin the routes do not allow: the browser refuses it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from braze_sim.server import Simulator
from tests import chromium
from tests.helpers import ROUTES
from tests.processes import ROOT, Processes, free_port, procfile_command, wait_for

pytestmark = [chromium.needs_chromium, pytest.mark.e2e]

PAGE_KEY = "demo-page-key-public-71d2"
USER = "sdk-browser-user"
SCREENSHOTS = Path("/tmp")

# The sandbox's two demo routes (relay.example.toml), allowing the test page's origin.
DEMO_ROUTES = """
[routes.demo_events]
database = "web"
table = "demo_events"
mode = "user_track"
track_record_type = "custom_events"
write_keys_env = "DEMO_WRITE_KEYS"
allowed_origins = ["{allowed}"]

[routes.demo_consent]
database = "web"
table = "demo_consent"
mode = "user_subscription"
write_keys_env = "DEMO_WRITE_KEYS"
allowed_origins = ["{allowed}"]
"""

# Calls the SDK as a page would: one Treasure client pointed at the relay, the user set as $global,
# then each call in turn; resolves with what each success or error callback received.
SDK_CALLS = """
const [endpoint, key, user, calls, done] = arguments;
(async () => {
  const td = new Treasure({database: 'web', writeKey: key, endpoint: endpoint});
  td.set('$global', {external_id: user});
  const results = [];
  for (const [method, table, record] of calls) {
    results.push(await new Promise((resolve) => td[method](
      table, record,
      (answer) => resolve({ok: true, answer: answer}),
      (error) => resolve({ok: false, error: String(error)}),
    )));
  }
  return results;
})().then(done, (error) => done([{ok: false, error: 'the script failed: ' + error}]));
"""


@pytest.fixture
def pages() -> tuple[str, str]:
    """Two origins for the demo page: one the routes allow, one they do not (ports of their own)."""
    allowed = free_port()
    other = free_port()
    while other == allowed:
        other = free_port()
    return f"http://127.0.0.1:{allowed}", f"http://127.0.0.1:{other}"


@pytest.fixture
def routes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pages: tuple[str, str]) -> Path:
    """The test routes plus the demo routes, whose page key is set as an operator sets it."""
    monkeypatch.setenv("DEMO_WRITE_KEYS", PAGE_KEY)
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + DEMO_ROUTES.format(allowed=pages[0]))
    return path


@pytest.fixture
def relay(stack: tuple[Processes, str], pages: tuple[str, str]) -> tuple[Processes, str]:
    """gunicorn (the stack), one RQ worker, and the demo page on both origins, all as processes."""
    procs, base = stack
    procs.start("worker")
    env = {**procs.env, "RELAY_DEMO_RELAY_URL": f"{base}/"}  # as scripts/sandbox sets it
    for port in (page.rsplit(":", 1)[1] for page in pages):
        log = open(procs.log_dir / f"demo-{port}.log", "wb")  # noqa: SIM115 - closed by the process
        # The sandbox's own command; a later --port wins over the one it names.
        command = f"exec {procfile_command('demo', 'Procfile.sandbox')} --port {port}"
        procs.running.append(
            subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
        wait_for(
            lambda port=port: answers(f"http://127.0.0.1:{port}/config.js"), 20, f"the demo page on {port}"
        )
    return procs, base  # the stack stops them all


def answers(url: str) -> bool:
    """True once the URL answers 200."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium, as a visitor's browser: no extra header, web security on."""
    driver = chromium.start(tmp_path / "chromium")
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def sdk(
    driver: webdriver.Chrome, base: str, calls: list[tuple[str, str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Run td-js-sdk calls in the page; each result is {ok, answer} or {ok: false, error}."""
    results: list[dict[str, Any]] = driver.execute_async_script(SDK_CALLS, f"{base}/", PAGE_KEY, USER, calls)
    return results


def access_log(procs: Processes, method: str, path: str) -> int:
    """How many requests with this method and path gunicorn's access log shows."""
    return len(re.findall(rf'"method": "{method}", "path": "{re.escape(path)}"', procs.logs()))


def click_and_read(driver: webdriver.Chrome, button: str) -> str:
    """Click one of the demo page's buttons and return the log line it adds (ok or fail)."""
    before = len(driver.find_elements(By.CSS_SELECTOR, "#log li"))
    driver.find_element(By.ID, button).click()
    WebDriverWait(driver, 15).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log li")) > before)
    line = driver.find_element(By.CSS_SELECTOR, "#log li")  # the newest is first
    return f"{line.get_attribute('class')}: {line.text}"


def profile(braze: Simulator) -> dict[str, Any]:
    """The test user as the simulator holds it (empty before Braze has them)."""
    found: dict[str, Any] = braze.state.profile(USER) or {}
    return found


def test_sdk_on_an_allowed_page_delivers_events_and_consent_to_braze(
    relay: tuple[Processes, str], pages: tuple[str, str], browser: webdriver.Chrome, braze: Simulator
) -> None:
    """addRecord, trackEvent and the demo's buttons from an allowed origin reach Braze's user state."""
    procs, base = relay
    # The page gets its routes' own key (public by design) and the relay's URL; no global key or secret.
    config = requests.get(f"{pages[0]}/config.js", timeout=5).text
    assert PAGE_KEY in config and f'"endpoint": "{base}/"' in config
    for name in ("RELAY_WRITE_KEYS", "RELAY_WEBHOOK_SECRETS", "BRAZE_API_KEY"):
        assert all(value not in config for value in procs.env[name].split(",")), name

    browser.get(f"{pages[0]}/")
    assert browser.execute_script("return Treasure.version") == "4.4.3"
    assert "is in the routes' allowed_origins" in browser.find_element(By.ID, "origin").text

    results = sdk(
        browser,
        base,
        [
            ("addRecord", "demo_events", {"name": "signup", "plan": "pro"}),
            ("trackEvent", "demo_events", {"name": "pricing_viewed"}),  # adds the SDK's td_* context
        ],
    )
    assert [result["ok"] for result in results] == [True, True], results
    assert [result["answer"]["accepted"] for result in results] == [1, 1]
    browser.find_element(By.ID, "external-id").clear()
    browser.find_element(By.ID, "external-id").send_keys(USER)
    assert click_and_read(browser, "send-event").startswith("ok: ")

    wanted = {"signup", "pricing_viewed", "demo_button_clicked"}
    wait_for(
        lambda: {e["name"] for e in profile(braze).get("events", [])} == wanted, 30, "three events in Braze"
    )
    events = {event["name"]: event for event in profile(braze)["events"]}
    assert events["signup"]["properties"] == {"plan": "pro"}
    assert events["demo_button_clicked"]["properties"] == {"page": "/"}
    assert "properties" not in events["pricing_viewed"]  # every td_* field the SDK added was dropped

    # Consent after the profile exists (Braze keeps a group state by external id only for a profile).
    (result,) = sdk(
        browser,
        base,
        [
            (
                "addRecord",
                "demo_consent",
                {"subscription_group_id": "g-news", "subscription_state": "unsubscribed"},
            )
        ],
    )
    assert result["ok"], result
    assert click_and_read(browser, "subscribe").startswith("ok: ")
    wait_for(
        lambda: (
            profile(braze).get("subscription_groups")
            == {"g-news": "unsubscribed", "demo_newsletter": "subscribed"}
        ),
        30,
        "both consent changes in Braze",
    )
    browser.save_screenshot(str(SCREENSHOTS / "td-js-sdk-allowed.png"))
    # The browser asked first: one preflight per path (then cached for Access-Control-Max-Age).
    assert access_log(procs, "OPTIONS", "/web/demo_events") >= 1
    assert access_log(procs, "POST", "/web/demo_events") == 3
    assert access_log(procs, "POST", "/web/demo_consent") == 2
    assert PAGE_KEY not in procs.logs()


def test_sdk_on_a_page_of_another_origin_is_refused_by_the_browser(
    relay: tuple[Processes, str], pages: tuple[str, str], browser: webdriver.Chrome, braze: Simulator
) -> None:
    """The page on an origin no route allows: its preflight gets no CORS headers, the SDK's calls fail."""
    procs, base = relay
    browser.get(f"{pages[1]}/")
    assert "is NOT in allowed_origins" in browser.find_element(By.ID, "origin").text

    results = sdk(
        browser,
        base,
        [
            ("addRecord", "demo_events", {"name": "signup"}),
            (
                "addRecord",
                "demo_consent",
                {"subscription_group_id": "g-news", "subscription_state": "subscribed"},
            ),
        ],
    )
    assert [result["ok"] for result in results] == [False, False], results
    assert all("Failed to fetch" in result["error"] for result in results), results
    assert click_and_read(browser, "send-event").startswith("fail: ")
    browser.save_screenshot(str(SCREENSHOTS / "td-js-sdk-refused.png"))
    console = " ".join(entry["message"] for entry in browser.get_log("browser"))
    assert "blocked by CORS policy" in console, console

    # The relay saw the preflights only: the browser never sent a record, so nothing was stored.
    wait_for(
        lambda: access_log(procs, "OPTIONS", "/web/demo_consent") >= 1, 10, "the preflight in the access log"
    )
    assert access_log(procs, "OPTIONS", "/web/demo_events") >= 1
    assert (
        access_log(procs, "POST", "/web/demo_events") == access_log(procs, "POST", "/web/demo_consent") == 0
    )
    assert profile(braze) == {}
    assert braze.requests == []
