"""Records as the edge loads them: Braze's field rules (schemas, fields, currencies), transformed routes.

The record schemas live in `schemas` (track, alias, identify, delete, consent), `identity` (merge,
external id rename and removal, alias update) and `catalog` (catalog items); importing the package
imports all three, and the registry is checked complete: a kind without a schema stops the process.
"""

from receiver.records import catalog, identity, schemas

schemas.SCHEMAS.complete()

__all__ = ["catalog", "identity", "schemas"]
