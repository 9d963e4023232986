"""The operator's pages at /admin/ (pages.py), who may use them (access.py), and the actions they share
with the command line (operations.py)."""

from receiver.admin.pages import register

__all__ = ["register"]
