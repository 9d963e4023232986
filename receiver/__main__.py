"""`python -m receiver COMMAND`: the operator's command line (receiver/cli/)."""

import sys

from receiver import create_app
from receiver.cli import main

if __name__ == "__main__":
    sys.exit(main(create_app))
