"""The operator's command line: `scripts/relay COMMAND`, `python -m receiver COMMAND`, `flask --app receiver`.

main.py reads the variables and runs a command; commands.py holds the commands (check, send-test,
dead, consent, unchanged); transform_try.py holds `transform try`; errors.py the one line a
command that cannot run ends with.
"""

from receiver.cli.commands import register
from receiver.cli.errors import load_settings
from receiver.cli.main import main

__all__ = ["load_settings", "main", "register"]
