"""Who may use the operator's pages: HTTP Basic with an admin key, CSRF tokens, and safe headers.

No admin key configured means every admin page answers 404 (fail closed). The user name is ignored;
the password must be one of `RELAY_ADMIN_KEYS`, compared in constant time. Forms carry a token kept
in the signed session cookie; the session key is derived from the admin keys, so every web process
on every machine agrees on it without another secret to configure.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, abort, render_template, request, session
from flask.sessions import SecureCookieSessionInterface

from receiver.auth import key_matches
from receiver.state import settings
from relay.config import Settings

GUARDED = ("admin", "rq_dashboard")  # the blueprints behind admin authentication
REALM = "braze-relay admin"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Our pages run no script and embed nothing: anything else the browser is asked to load is refused.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


def session_key(settings: Settings) -> bytes:
    """The key that signs the admin session cookie: an HMAC of the admin keys, the same in every process."""
    material = b"\0".join(key.reveal().encode() for key in settings.admin_keys)
    return hmac.new(material, b"braze-relay admin session v1", hashlib.sha256).digest()


def csrf_token() -> str:
    """This session's form token (made on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> Response | None:
    """None when the form carries this session's token, else a 400 page (forged, or an old session)."""
    sent = request.form.get("csrf", "")
    expected = session.get("csrf")
    if isinstance(expected, str) and expected and hmac.compare_digest(sent.encode(), expected.encode()):
        return None
    page = render_template(
        "admin/error.html",
        title="Form expired",
        message="This form's security token is missing or out of date. Reload the page and try again.",
    )
    return Response(page, 400)


def same_origin() -> bool:
    """True when the browser says this request comes from a page of this site (Origin, Sec-Fetch-Site)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return urlsplit(origin).netloc == request.host
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


def challenge() -> Response:
    """401 asking the browser for Basic credentials."""
    return Response(
        "Admin key required.\n",
        401,
        {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"', "Content-Type": "text/plain"},
    )


def guard() -> Response | None:
    """Before each admin request: 404 without admin keys, 401 without a valid one; POSTs from our pages."""
    keys = settings().admin_keys
    if not keys:
        abort(404)  # the same JSON 404 as any unknown path: nothing says the pages exist
    credentials = request.authorization
    if (
        credentials is None
        or credentials.type != "basic"
        or not key_matches(credentials.password or "", keys)
    ):
        return challenge()
    if request.blueprint == "rq_dashboard":
        # rq-dashboard's buttons POST without a token, and it even takes "requeue all" as a GET: a
        # page on another site could make the operator's browser send them with its cached Basic
        # credentials. Its own script sends these from our origin, which browsers say in Origin.
        # Flask answers HEAD (and GET, for "requeue all") by running the view itself: an action
        # is taken only by POST, which must come from our own pages.
        rule = request.url_rule
        if rule is not None and "POST" in (rule.methods or ()) and request.method != "POST":
            abort(405)
        if request.method not in SAFE_METHODS and not same_origin():
            return Response("Cross-site request refused.\n", 403, {"Content-Type": "text/plain"})
    return None


def secure_headers(response: Response) -> Response:
    """After every admin request: never cached, never framed; our own pages under a strict CSP."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.blueprint == "admin":
        response.headers["Content-Security-Policy"] = CSP
    return response


class SessionInterface(SecureCookieSessionInterface):
    """The signed session cookie, marked `Secure` whenever the request came over HTTPS.

    Behind a proxy that terminates TLS the scheme is the proxy's X-Forwarded-Proto (ProxyFix, in
    receiver/__init__.py);
    over plain HTTP (local use) the cookie stays usable.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when configured so, or when this request's scheme is https."""
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (bool(request) and request.is_secure)


def install(app: Flask, settings: Settings) -> None:
    """Attach the guard to the app, and the session cookie the forms need (only with admin keys)."""
    if settings.admin_keys and not app.secret_key:
        app.secret_key = session_key(settings)
    app.session_interface = SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="relay_admin",
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    for name in GUARDED:  # only the admin blueprints' requests: the ingest paths skip both
        app.before_request_funcs.setdefault(name, []).append(guard)
        app.after_request_funcs.setdefault(name, []).append(secure_headers)
