"""The operator's command line: `scripts/relay COMMAND`, `python -m receiver COMMAND`, `flask --app receiver`.

main.py reads the variables and runs a command; commands.py holds the commands (check, send-test,
dead, consent, unchanged); transform_try.py holds `transform try`.
"""

from receiver.cli.commands import register
from receiver.cli.main import main

__all__ = ["main", "register"]
