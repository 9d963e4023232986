"""The edge benchmark's anchors as tiny Flask apps, served by the Procfile's gunicorn command and config.

    gunicorn --config gunicorn.conf.py "bench.anchor_apps:bare_app()"    # the edge's ceiling
    gunicorn --config gunicorn.conf.py "bench.anchor_apps:inline_app()"  # what a user would write

Both answer the relay's postback path, so bench/postback.lua loads them unchanged.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import requests
from flask import Flask, Response, jsonify, request

POSTBACK = "/postback/v3/event/<database>/<table>"


def _health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})


def bare_app() -> Flask:
    """A view that reads the JSON body and answers `{}`: nothing is validated or stored."""
    app = Flask("bench_bare")
    _health(app)

    @app.post(POSTBACK)
    def postback(database: str, table: str) -> Response:
        request.get_json(force=True)
        return jsonify({})

    return app


def bare_rpush_app() -> Flask:
    """The bare view plus one RPUSH of the body to Redis (what one round trip costs the edge)."""
    import redis

    app = Flask("bench_bare_rpush")
    _health(app)
    client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)

    @app.post(POSTBACK)
    def postback(database: str, table: str) -> Response:
        request.get_json(force=True)
        client.rpush("bench:rpush", request.get_data())
        return jsonify({})

    return app


def inline_app() -> Flask:
    """A view that forwards each postback to Braze's /users/track inline, one request per record.

    It keeps one `requests.Session` per gunicorn worker (kept-alive connections): the generous form
    of what a user would write, so the relay is compared with the best of this design.
    """
    app = Flask("bench_inline")
    _health(app)
    endpoint = os.environ["BRAZE_REST_ENDPOINT"].rstrip("/") + "/users/track"
    headers = {"Authorization": f"Bearer {os.environ['BRAZE_API_KEY']}"}
    session = requests.Session()

    @app.post(POSTBACK)
    def postback(database: str, table: str) -> Response | tuple[Response, int]:
        record = request.get_json(force=True)
        event = {
            "external_id": record.get("external_id"),
            "name": record.get("name"),
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "properties": {k: v for k, v in record.items() if k not in ("external_id", "name", "time")},
        }
        answer = session.post(endpoint, json={"events": [event]}, headers=headers, timeout=10)
        if answer.status_code >= 300:
            return jsonify({"error": f"Braze answered {answer.status_code}"}), 502
        return jsonify({})

    return app


def profiled_relay_app() -> Flask:
    """The relay's own app, this gunicorn worker sampled by bench/stack_sampler.py (profile_web.py)."""
    from bench import stack_sampler
    from receiver import create_app

    stack_sampler.start()
    return create_app()


def profiled_bare_app() -> Flask:
    """The bare view, sampled the same way."""
    from bench import stack_sampler

    stack_sampler.start()
    return bare_app()


def relay_variant_app() -> Flask:
    """The relay's own app with what-if changes named in $BENCH_VARIANT (bench/whatif.py).

    no_redis:  store_batch replaced by nothing (records are lost): the relay's Python alone.
    min_redis: store_batch replaced by the least a record needs: one RPUSH and the lane's SET NX in
               one plain pipeline (enqueueing the drain job when it armed the lane); no counters,
               no script, no group commit, SADD of the lanes once at start. Measures a design, not a
               fix.
    Nothing of the product is edited: the changes live in this gunicorn worker only.
    """
    from receiver import create_app, state, views
    from relay import lanes
    from relay.lanes import Lane

    variant = {name for name in os.environ.get("BENCH_VARIANT", "").split(",") if name}
    app = create_app()
    if "no_redis" in variant:
        # Nothing stored at all (records are lost): what the relay's Python costs without Redis.
        views.store_batch = lambda *args, **kwargs: None  # type: ignore[assignment]
    if "min_redis" in variant:
        conf = state.of(app).settings
        client = state.of(app).redis
        for route in conf.routes.values():
            for lane in Lane.of_route(route, conf.delivery.track_shards):
                client.sadd(lane.keys.lanes, lane.name)  # type: ignore[attr-defined]

        def store_batch(
            client: object, batch: object, settings: object, claim: object = None, *, group: object = None
        ) -> None:
            delivery = settings.delivery  # type: ignore[attr-defined]
            token = lanes.new_token()
            for lane, payloads in batch.payloads.items():  # type: ignore[attr-defined]
                pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
                pipe.rpush(lane.list_key, *payloads)
                lane.take_lease(pipe, token, delivery)
                if pipe.execute()[-1]:
                    lane.enqueue_drain(client, token, delivery)

        views.store_batch = store_batch  # type: ignore[assignment]
    return app
