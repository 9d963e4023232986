"""TD's real browser SDK in a real Chromium, on pages of other origins, through gunicorn and a worker.

td-js-sdk 4.4.3 as vendored from npm (sdk_demo/static/td-js-sdk/td.min.js, which sets
`window.Treasure`) posts to the example routes file's SDK routes (relay.example.toml: sdk_events,
sdk_pageviews, sdk_consent, sdk_consent_contexts, presets td_js_sdk and td_js_consent) with their
allowed origins set to this test's pages. The SDK is used as its docs say
(https://github.com/treasure-data/td-js-sdk README.md and CONSENTMANAGER.md): `td.set('$global',
...)`, `trackEvent`, `addRecord`, `trackPageview`, `setSignedMode`, and the consent manager's
`addContext`, `addConsents`, `updateConsent`, `saveContexts`, `saveConsents`. Two kinds of page:
a plain one with nothing but the SDK (served by this test), and the sandbox's demo page
(`python -m sdk_demo`, as Procfile.sandbox starts it). A copy of the demo page on a port no route
allows is refused by the browser.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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

SDK_KEY = "sdk-page-key-public-71d2"
USER = "sdk-browser-user"
GROUP = "sandbox-newsletter-group"  # the example's purposes: newsletter -> this group
SCREENSHOTS = Path("/tmp")
VENDORED = ROOT / "sdk_demo" / "static" / "td-js-sdk"
PLAIN_TITLE = "A shop page with td-js-sdk"
PLAIN_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{PLAIN_TITLE}</title><link rel="icon" href="data:,"></head>
<body><script src="td.min.js"></script></body></html>
"""

# A Treasure client as a page makes one: the routes' database, the page's key, the relay as endpoint,
# the consent manager with its default tables (td_cm_consent, td_cm_context). Returns its client id.
NEW_CLIENT = """
const [endpoint, key] = arguments;
window.td = new Treasure({database: 'web', writeKey: key, endpoint: endpoint, consentManager: {}});
return td.client.track.uuid;
"""
# Runs SDK calls in turn, each with a success and an error callback appended to its arguments (every
# sending call takes them last); resolves with what each callback received.
CALLS = """
const [calls, done] = arguments;
const call = (method, args) => new Promise((resolve) => td[method](
  ...args,
  (answer) => resolve({ok: true, answer: answer === undefined ? null : answer}),
  (error) => resolve({ok: false, error: error instanceof Error ? String(error) : JSON.stringify(error)}),
));
(async () => {
  const results = [];
  for (const [method, ...args] of calls) results.push(await call(method, args));
  return results;
})().then(done, (error) => done([{ok: false, error: 'the script failed: ' + error}]));
"""
# The consent manager set up as CONSENTMANAGER.md's example does: a context, then its consents.
ADD_CONSENTS = """
const [statuses] = arguments;
const contextId = td.addContext({
  brand: 'Example Shop', domain_name: location.hostname,
  collection_type: 'Whole website', collection_point_id: 'whole_website'});
const consents = {};
for (const [purpose, status] of Object.entries(statuses)) {
  consents[purpose] = {description: 'Consent to ' + purpose, datatype: 'Attributes', status: status,
                       context_id: contextId};
}
td.addConsents(consents);
return contextId;
"""
UPDATE_CONSENT = "td.updateConsent(arguments[0], {[arguments[1]]: {status: arguments[2]}})"


@pytest.fixture
def plain_page(tmp_path: Path) -> Iterator[str]:
    """A page of its own origin with nothing but the vendored SDK, as a shop's page loads it."""
    root = tmp_path / "plain"
    root.mkdir()
    shutil.copy(VENDORED / "td.min.js", root / "td.min.js")
    (root / "index.html").write_text(PLAIN_PAGE)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    """Static files, without a line on stderr per request."""

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing."""


@pytest.fixture
def demo_pages() -> tuple[str, str]:
    """Two origins for the demo page: one the routes allow, one they do not (ports of their own)."""
    allowed = free_port()
    other = free_port()
    while other == allowed:
        other = free_port()
    return f"http://127.0.0.1:{allowed}", f"http://127.0.0.1:{other}"


def example_sdk_routes(origins: list[str]) -> str:
    """relay.example.toml's SDK routes as they are, with allowed_origins naming this test's pages."""
    example = (ROOT / "relay.example.toml").read_text()
    start = example.index("[routes.sdk_events]")
    end = example.index("[routes.", example.index("[routes.sdk_consent_contexts]") + 1)
    routes, count = re.subn(
        r"^allowed_origins = .*$", f"allowed_origins = {json.dumps(origins)}", example[start:end], flags=re.M
    )
    assert count == 4, "the example's four SDK routes each name their allowed_origins"
    return routes


@pytest.fixture
def routes_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plain_page: str, demo_pages: tuple[str, str]
) -> Path:
    """The test routes plus the example's SDK routes, whose key is set as an operator sets it."""
    monkeypatch.setenv("SDK_WRITE_KEYS", SDK_KEY)
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + example_sdk_routes([plain_page, demo_pages[0]]))
    return path


@pytest.fixture
def relay(
    stack: tuple[Processes, str], demo_pages: tuple[str, str], braze: Simulator
) -> tuple[Processes, str]:
    """gunicorn (the stack), one RQ worker, and the demo page on both origins, all as processes."""
    procs, base = stack
    procs.start("worker")
    # The demo page as ./scripts/sandbox runs it: sandbox mode (no Braze variables), so it links to
    # the simulator's view of the user; the relay's URL as scripts/sandbox sets it.
    env = {name: value for name, value in procs.env.items() if not name.startswith("BRAZE_")}
    env.update({"RELAY_SANDBOX_BRAZE_URL": braze.url, "RELAY_DEMO_RELAY_URL": f"{base}/"})
    for port in (page.rsplit(":", 1)[1] for page in demo_pages):
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


def sdk(driver: webdriver.Chrome, *calls: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Run td-js-sdk calls of the page's `td`; each result is {ok, answer} or {ok: false, error}."""
    results: list[dict[str, Any]] = driver.execute_async_script(CALLS, [list(call) for call in calls])
    return results


def access(procs: Processes) -> list[tuple[str, str, int]]:
    """gunicorn's access log: (method, path, status) of each request the relay answered."""
    lines = (json.loads(line) for line in procs.logs().splitlines() if line.startswith("{"))
    return [(line["method"], line["path"], line["status"]) for line in lines if "method" in line]


def posts(procs: Processes, path: str) -> list[int]:
    """The statuses the relay answered the POSTs to one path with."""
    return [status for method, logged, status in access(procs) if (method, logged) == ("POST", path)]


def preflights(procs: Processes, path: str) -> int:
    """How many CORS preflights (OPTIONS) to one path the relay answered."""
    return sum(1 for method, logged, _ in access(procs) if (method, logged) == ("OPTIONS", path))


def alias_of(client_id: str) -> dict[str, str]:
    """The Braze alias the presets name a browser by."""
    return {"alias_name": client_id, "alias_label": "td_client_id"}


def browser_profile(braze: Simulator, client_id: str) -> dict[str, Any]:
    """The browser's alias profile as the simulator holds it (empty before Braze has it)."""
    found: dict[str, Any] = braze.state.find(user_alias=alias_of(client_id)) or {}
    return found


def user_profile(braze: Simulator, external_id: str = USER) -> dict[str, Any]:
    """A user as the simulator holds it (empty before Braze has them)."""
    found: dict[str, Any] = braze.state.profile(external_id) or {}
    return found


def visit(driver: webdriver.Chrome, page: str, base: str) -> str:
    """Open the plain page and make its Treasure client pointed at the relay; the SDK's client id."""
    driver.get(f"{page}/")
    client_id: str = driver.execute_script(NEW_CLIENT, f"{base}/", SDK_KEY)
    return client_id


def track_items(braze: Simulator, array: str) -> list[dict[str, Any]]:
    """Every object of one /users/track array that reached the simulator, in order."""
    return [item for entry in braze.requests for item in (entry["body"] or {}).get(array, [])]


def test_known_users_events_and_the_browsers_consent_reach_braze_as_the_sdk_sends_them(
    relay: tuple[Processes, str], plain_page: str, browser: webdriver.Chrome, braze: Simulator
) -> None:
    """$global external id: events on that user; the consent manager's give, refuse: the browser's alias."""
    procs, base = relay
    client_id = visit(browser, plain_page, base)
    browser.execute_script("td.set('$global', {external_id: arguments[0]})", USER)

    sent = sdk(
        browser,
        ("trackEvent", "events", {"event": "signup", "plan": "pro"}),  # adds the SDK's td_* values
        ("addRecord", "events", {"event": "pricing_viewed", "tier": "team"}),
        ("trackPageview", "pageviews"),
    )
    assert all(result["ok"] for result in sent), sent
    assert [result["answer"]["accepted"] for result in sent] == [1, 1, 1]

    # The consent manager, as CONSENTMANAGER.md's example: a context, consents, saveContexts, saveConsents.
    context_id = browser.execute_script(
        ADD_CONSENTS, {"newsletter": "given", "marketing_email": "given", "analytics": "given"}
    )
    contexts, consents = sdk(browser, ("saveContexts",), ("saveConsents",))
    assert contexts["ok"] and consents["ok"], (contexts, consents)
    (context_answer,) = contexts["answer"]  # the relay's answer to the one context record
    assert (context_answer["accepted"], context_answer["filtered"]) == (0, 1)
    assert {purpose: c["status"] for purpose, c in consents["answer"].items()} == {
        "newsletter": "given",
        "marketing_email": "given",
        "analytics": "given",
    }
    assert all(c["identifier"] == client_id for c in consents["answer"].values())
    wait_for(
        lambda: browser_profile(braze, client_id).get("subscription_groups") == {GROUP: "subscribed"},
        30,
        "the newsletter given in Braze",
    )

    browser.execute_script(UPDATE_CONSENT, context_id, "newsletter", "refused")
    (refused,) = sdk(browser, ("saveConsents",))
    assert refused["ok"], refused
    assert {purpose: c["status"] for purpose, c in refused["answer"].items()} == {"newsletter": "refused"}
    wait_for(
        lambda: browser_profile(braze, client_id).get("subscription_groups") == {GROUP: "unsubscribed"},
        30,
        "the newsletter refused in Braze",
    )
    wait_for(lambda: len(user_profile(braze).get("events", [])) == 3, 30, "three events in Braze")
    browser.save_screenshot(str(SCREENSHOTS / "td-js-sdk-known-user.png"))

    # The known user: the events, named by their `event` (a page view by its table), with the page's
    # context from trackEvent and trackPageview; no consent (the consent records carry no $global).
    user = user_profile(braze)
    events = {event["name"]: event for event in user["events"]}
    page = {"page_url": f"{plain_page}/", "page_title": PLAIN_TITLE}
    assert events["signup"]["properties"] == {"plan": "pro", **page}
    assert events["pricing_viewed"]["properties"] == {"tier": "team"}  # addRecord adds no td_* values
    assert events["pageviews"]["properties"] == page
    assert (user["subscription_groups"], user["email_subscribe"], user["user_aliases"]) == ({}, None, [])

    # The browser: its alias profile holds the consents, field by field; analytics maps to nothing.
    profile = browser_profile(braze, client_id)
    assert profile["external_id"] is None and profile["user_aliases"] == [alias_of(client_id)]
    assert profile["subscription_groups"] == {GROUP: "unsubscribed"}
    assert (profile["email_subscribe"], profile["push_subscribe"]) == ("subscribed", None)
    assert (profile["events"], profile["attributes"]) == ([], {})

    # What the SDK sent, path by path (each path's preflight first), and what the relay answered.
    assert posts(procs, "/web/events") == [200, 200]
    assert posts(procs, "/web/pageviews") == [200]
    assert posts(procs, "/web/td_cm_context") == [200]
    assert posts(procs, "/web/td_cm_consent") == [200] * 4  # one per consent, then the updated one
    for path in ("/web/events", "/web/pageviews", "/web/td_cm_context", "/web/td_cm_consent"):
        assert preflights(procs, path) >= 1, path
    # What reached Braze: /users/track only; events by the external id, states by the alias.
    assert {entry["path"] for entry in braze.requests} == {"/users/track"}
    assert [(item["external_id"], item["name"]) for item in track_items(braze, "events")] == [
        (USER, "signup"),
        (USER, "pricing_viewed"),
        (USER, "pageviews"),
    ]
    states = track_items(braze, "attributes")
    assert all(item["user_alias"] == alias_of(client_id) for item in states)
    sent_states = [
        item["subscription_groups"][0]["subscription_state"]
        for item in states
        if "subscription_groups" in item
    ]
    # Each state at once, and once more after the alias's earlier records (unless a newer one was sent).
    assert [state for i, state in enumerate(sent_states) if sent_states[i - 1 : i] != [state]] == [
        "subscribed",
        "unsubscribed",
    ]
    assert sent_states[-1] == "unsubscribed" and len(sent_states) in (3, 4), sent_states
    # Neither the context nor the purpose the mapping does not name went anywhere.
    sent_to_braze = json.dumps([entry["body"] for entry in braze.requests])
    assert "whole_website" not in sent_to_braze and "analytics" not in sent_to_braze
    assert SDK_KEY not in procs.logs()


def test_an_anonymous_visitor_is_named_by_its_client_id_once_the_sdk_is_in_signed_mode(
    relay: tuple[Processes, str], plain_page: str, browser: webdriver.Chrome, braze: Simulator
) -> None:
    """Anonymous mode: no user, 422; signed mode: events and consents on one alias, kept across visits."""
    procs, base = relay
    client_id = visit(browser, plain_page, base)
    coupon = ("trackEvent", "events", {"event": "coupon_clicked", "coupon": "SPRING20"})

    # The SDK's default, anonymous mode, drops td_client_id: the record names no user, and is refused.
    (anonymous,) = sdk(browser, coupon)
    assert not anonymous["ok"] and "UNPROCESSABLE" in anonymous["error"].upper(), anonymous
    wait_for(lambda: posts(procs, "/web/events") == [422], 10, "the refused event in the access log")

    browser.execute_script("td.setSignedMode()")
    (signed,) = sdk(browser, coupon)
    assert signed["ok"] and signed["answer"]["accepted"] == 2, signed  # the alias's profile, then the event
    browser.execute_script(ADD_CONSENTS, {"newsletter": "given"})
    (saved,) = sdk(browser, ("saveConsents",))
    assert saved["ok"], saved
    wait_for(
        lambda: (
            browser_profile(braze, client_id).get("subscription_groups") == {GROUP: "subscribed"}
            and len(browser_profile(braze, client_id).get("events", [])) == 1
        ),
        30,
        "the event and the consent on the browser's alias",
    )

    # The next visit: a new client finds the same client id (the SDK's cookie, kept in signed mode)
    # and the consents (localStorage); refusing changes the same alias's state.
    assert visit(browser, plain_page, base) == client_id
    context_id = browser.execute_script("return td.getContexts()[0].context_id")
    browser.execute_script(UPDATE_CONSENT, context_id, "newsletter", "refused")
    (refused,) = sdk(browser, ("saveConsents",))
    assert refused["ok"], refused
    wait_for(
        lambda: browser_profile(braze, client_id).get("subscription_groups") == {GROUP: "unsubscribed"},
        30,
        "the newsletter refused on the same alias",
    )

    profile = browser_profile(braze, client_id)
    assert profile["external_id"] is None and profile["user_aliases"] == [alias_of(client_id)]
    assert profile["attributes"] == {"web_client_id": client_id}  # made the alias's profile
    (event,) = profile["events"]
    assert event["name"] == "coupon_clicked"
    assert event["properties"] == {
        "coupon": "SPRING20",
        "page_url": f"{plain_page}/",
        "page_title": PLAIN_TITLE,
    }
    assert braze.state.count() == 1
    assert posts(procs, "/web/td_cm_consent") == [200, 200]


def test_the_sandbox_demo_page_sends_an_event_and_consent_changes_and_links_to_the_browser_in_braze(
    relay: tuple[Processes, str], demo_pages: tuple[str, str], browser: webdriver.Chrome, braze: Simulator
) -> None:
    """The demo's buttons: an event and give, refuse through the SDK routes; its link shows the alias."""
    procs, base = relay
    # The page gets the routes' own key (public by design) and the relay's URL; no global key or secret.
    config = requests.get(f"{demo_pages[0]}/config.js", timeout=5).text
    assert SDK_KEY in config and f'"endpoint": "{base}/"' in config
    for name in ("RELAY_WRITE_KEYS", "RELAY_WEBHOOK_SECRETS", "BRAZE_API_KEY"):
        assert all(value not in config for value in procs.env[name].split(",")), name

    browser.get(f"{demo_pages[0]}/")
    assert browser.execute_script("return Treasure.version") == "4.4.3"
    assert "is in the routes' allowed_origins" in browser.find_element(By.ID, "origin").text
    client_id = browser.execute_script("return td.client.track.uuid")
    shown_alias = browser.find_element(By.ID, "alias").text  # shown to the visitor
    assert json.loads(shown_alias) == alias_of(client_id)
    link = browser.find_element(By.ID, "braze-alias").get_attribute("href")
    assert link == f"{braze.url}/_sim/aliases/td_client_id/{client_id}"

    assert click_and_read(browser, "send-event") == ["ok: event: events: stored"]
    assert click_and_read(browser, "given-newsletter", 2) == [
        "ok: consent newsletter given: td_cm_consent: stored",
        "ok: context: td_cm_context: stored",
    ]
    wait_for(
        lambda: browser_profile(braze, client_id).get("subscription_groups") == {GROUP: "subscribed"},
        30,
        "the newsletter given in Braze",
    )
    assert click_and_read(browser, "refused-newsletter", 2)[0] == (
        "ok: consent newsletter refused: td_cm_consent: stored"
    )
    assert click_and_read(browser, "given-marketing_email", 2)[0] == (
        "ok: consent marketing_email given: td_cm_consent: stored"
    )
    wait_for(
        lambda: (
            browser_profile(braze, client_id).get("subscription_groups") == {GROUP: "unsubscribed"}
            and browser_profile(braze, client_id).get("email_subscribe") == "subscribed"
        ),
        30,
        "the newsletter refused and marketing email given in Braze",
    )
    assert browser.find_element(By.ID, "status-newsletter").text == "refused"
    assert browser.find_element(By.ID, "status-marketing_email").text == "given"

    # The link shows what the sandbox Braze holds for this browser: the event and both states.
    shown = requests.get(link, timeout=5).json()
    assert shown == browser_profile(braze, client_id)
    (event,) = shown["events"]
    assert event["name"] == "demo_button_clicked"
    assert event["properties"] == {
        "button": "send-event",
        "page_url": f"{demo_pages[0]}/",
        "page_title": "braze-relay: td-js-sdk demo",
    }
    # With an external id typed in, the next event names that user (and its link appears).
    browser.find_element(By.ID, "external-id").send_keys(USER)
    assert click_and_read(browser, "send-event") == ["ok: event: events: stored"]
    wait_for(lambda: len(user_profile(braze).get("events", [])) == 1, 30, "the user's event in Braze")
    assert browser.find_element(By.ID, "braze-user").get_attribute("href") == f"{braze.url}/_sim/users/{USER}"
    browser.save_screenshot(str(SCREENSHOTS / "td-js-sdk-demo.png"))
    assert posts(procs, "/web/td_cm_context") == [200] * 3  # one saveContexts per decision
    assert posts(procs, "/web/td_cm_consent") == [200] * 3


def click_and_read(driver: webdriver.Chrome, button: str, lines: int = 1, what: str = "") -> list[str]:
    """Click a button of the demo page; the log lines it adds, sorted, each without its time and answer.

    `what`: only the lines about this (the page's `data-what`, e.g. "event"), where answers to earlier
    calls may still be coming in.
    """
    selector = f'#log li[data-what^="{what}"]' if what else "#log li"
    before = len(driver.find_elements(By.CSS_SELECTOR, selector))
    driver.find_element(By.ID, button).click()
    WebDriverWait(driver, 15).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, selector)) >= before + lines
    )
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    added = found[: len(found) - before]  # the page puts the newest line first
    # A line reads "<time>  <what>: <table>: stored, {answer}", or "...: <table>: <error> (refused ...)".
    texts = [line.get_attribute("textContent").split("  ", 1)[1].split(", {")[0] for line in added]
    return sorted(f"{line.get_attribute('class')}: {text}" for line, text in zip(added, texts, strict=True))


def test_sdk_on_a_page_of_another_origin_is_refused_by_the_browser(
    relay: tuple[Processes, str], demo_pages: tuple[str, str], browser: webdriver.Chrome, braze: Simulator
) -> None:
    """The demo page on an origin no route allows: preflights get no CORS headers, every SDK call fails."""
    procs, _ = relay
    browser.get(f"{demo_pages[1]}/")
    assert "is NOT in allowed_origins" in browser.find_element(By.ID, "origin").text

    results = sdk(
        browser,
        ("trackEvent", "events", {"event": "signup"}),
        ("trackPageview", "pageviews"),
        ("saveContexts",),
        ("saveConsents",),  # the demo's consents (notgiven): the SDK sends each of them
    )
    assert [result["ok"] for result in results] == [False] * 4, results
    assert all("Failed to fetch" in result["error"] for result in results), results
    # The refusals of the consent calls above may still be reaching the page's log: read the event's.
    (line,) = click_and_read(browser, "send-event", what="event")
    assert line.startswith("fail: event: events: TypeError: Failed to fetch"), line
    browser.save_screenshot(str(SCREENSHOTS / "td-js-sdk-refused.png"))
    console = " ".join(entry["message"] for entry in browser.get_log("browser"))
    assert "blocked by CORS policy" in console, console

    # The relay saw the preflights only: the browser never sent a record, so nothing was stored.
    for path in ("/web/events", "/web/pageviews", "/web/td_cm_context", "/web/td_cm_consent"):
        wait_for(lambda path=path: preflights(procs, path) >= 1, 10, f"the preflight of {path}")
        assert posts(procs, path) == [], path
    assert braze.state.count() == 0
    assert braze.requests == []
