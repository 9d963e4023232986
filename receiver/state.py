"""The app's shared objects, built once by the app factory (`build`), behind one typed accessor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis
from flask import Flask, current_app
from prometheus_client import CollectorRegistry

from receiver.group_commit import GroupCommit
from receiver.records.loader import RecordLoader
from receiver.redis_check import RedisCheck
from relay import store
from relay.config import Settings
from relay.metrics import RelayCollector
from relay.routes import Route

KEY = "relay"  # the one app.extensions key of the relay


@dataclass
class EdgeState:
    """Settings, the Redis client, routes by (database, table), record loaders by route, metrics."""

    settings: Settings
    redis: redis.Redis
    tables: Mapping[tuple[str, str], Route]
    loaders: Mapping[str, RecordLoader]  # how each route's records are loaded (receiver/records/)
    metrics: CollectorRegistry
    group: GroupCommit  # the process's threads share Redis round trips for their one-script writes
    redis_check: RedisCheck  # Redis checked (eviction policy) before this process stores anything
    openapi: bytes | None = None  # the serialized OpenAPI document, built on first request


def build(settings: Settings) -> EdgeState:
    """The shared objects of one app: its Redis client, metrics, group commit, Redis check, loaders."""
    # Short timeouts: when Redis is away the caller hears 503 quickly instead of hanging.
    client = store.connect(settings, socket_timeout=5, socket_connect_timeout=2)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(client, settings.workspaces, memory_warn=settings.redis_memory_warn))
    return EdgeState(
        settings=settings,
        redis=client,
        tables={(r.database, r.table): r for r in settings.routes.values() if r.database and r.table},
        loaders={name: RecordLoader(route, settings.limits) for name, route in settings.routes.items()},
        metrics=registry,
        group=GroupCommit(client, wait_s=2 * (5 + 2)),  # twice the client's timeouts
        redis_check=RedisCheck(
            client, allow_eviction=settings.allow_eviction, enabled=settings.redis_external
        ),
    )


def install(app: Flask, edge: EdgeState) -> None:
    """Attach the state to the app (the factory does this once)."""
    app.extensions[KEY] = edge


def of(app: Flask) -> EdgeState:
    """The state of an app."""
    edge: EdgeState = app.extensions[KEY]
    return edge


def current() -> EdgeState:
    """The state of the app handling this request or command."""
    return of(current_app)


def settings() -> Settings:
    """The settings loaded at start."""
    return current().settings


def redis_client() -> redis.Redis:
    """The app's Redis client."""
    return current().redis
