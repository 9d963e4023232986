"""The app's shared objects, as the app factory put them in `app.extensions`, typed."""

from __future__ import annotations

import redis
from flask import current_app

from relay.config import Settings


def settings() -> Settings:
    """The settings loaded at start."""
    conf: Settings = current_app.extensions["relay.settings"]
    return conf


def redis_client() -> redis.Redis:
    """The app's Redis client."""
    client: redis.Redis = current_app.extensions["redis"]
    return client
