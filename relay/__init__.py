"""Shared leaves of braze-relay: configuration, routes, Redis keys and the record envelope.

`receiver/` (the HTTP edge) and `handlers/` (the workers) both import from here; nothing here
imports from either of them.
"""
