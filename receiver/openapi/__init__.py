"""The OpenAPI 3.1 document of the edge: assembled in document.py from the schemas, described in parts.py."""

from receiver.openapi.document import register

__all__ = ["register"]
