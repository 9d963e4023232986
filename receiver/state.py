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
from relay.config import Settings
from relay.metrics import RelayCollector
from relay.redises import Redises, Server
from relay.routes import Route

KEY = "relay"  # the one app.extensions key of the relay


@dataclass(frozen=True)
class Store:
    """One Redis as the edge uses it: its client, its check, and the group commit of its writes."""

    server: Server
    redis: redis.Redis
    group: GroupCommit  # the process's threads share Redis round trips for their one-script writes
    redis_check: RedisCheck  # Redis checked (eviction policy) before this process stores anything


@dataclass
class EdgeState:
    """Settings, the Redis clients, routes by (database, table), record loaders by route, metrics.

    `redis`, `group` and `redis_check` are REDIS_URL's; a route's own are `store_of(route)`'s.
    """

    settings: Settings
    redis: redis.Redis
    tables: Mapping[tuple[str, str], Route]
    loaders: Mapping[str, RecordLoader]  # how each route's records are loaded (receiver/records/)
    metrics: CollectorRegistry
    group: GroupCommit
    redis_check: RedisCheck
    redises: Redises  # every configured Redis (relay/redises.py)
    stores: Mapping[str, Store]  # by Redis name, REDIS_URL's first
    openapi: bytes | None = None  # the serialized OpenAPI document, built on first request

    def store_of(self, workspace: str) -> Store:
        """The Redis a workspace's records are stored on."""
        return self.stores[self.redises.server_of(workspace).name]


def build(settings: Settings) -> EdgeState:
    """The shared objects of one app: its Redis clients, metrics, group commits, Redis checks, loaders."""
    # Short timeouts: when Redis is away the caller hears 503 quickly instead of hanging.
    redises = Redises(settings, socket_timeout=5, socket_connect_timeout=2)
    stores = {
        server.name: Store(
            server,
            client,
            GroupCommit(client, wait_s=2 * (5 + 2)),  # twice the client's timeouts
            # The embedded Redis (sandbox) is checked by the workers that run it.
            RedisCheck(
                client, allow_eviction=settings.allow_eviction, enabled=bool(server.url or settings.redis_url)
            ),
        )
        for server, client in redises
    }
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(redises, memory_warn=settings.redis_memory_warn))
    first = next(iter(stores.values()))
    return EdgeState(
        settings=settings,
        redis=first.redis,
        tables={(r.database, r.table): r for r in settings.routes.values() if r.database and r.table},
        loaders={name: RecordLoader(route, settings.limits) for name, route in settings.routes.items()},
        metrics=registry,
        group=first.group,
        redis_check=first.redis_check,
        redises=redises,
        stores=stores,
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
    """REDIS_URL's client (a route's own Redis: `workspace_client`)."""
    return current().redis


def workspace_client(workspace: str) -> redis.Redis:
    """The client of the Redis a workspace lives on."""
    edge = current()
    return edge.redises.of(workspace)


def redises() -> Redises:
    """Every configured Redis, with its client."""
    return current().redises
