"""Send one webhook signed the Standard Webhooks way (the `standardwebhooks` library), as a sender would.

    .venv/bin/python examples/send_signed_webhook.py ROUTE '{"external_id": "user-1", "name": "signed"}'

The secret is the first of RELAY_WEBHOOK_SECRETS (from the environment, or the running sandbox's
var/sandbox.env); the relay is RELAY_URL (default http://127.0.0.1:8000).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import requests
from dotenv import dotenv_values
from standardwebhooks.webhooks import Webhook

SANDBOX_ENV = Path(__file__).resolve().parent.parent / "var" / "sandbox.env"


def signed_headers(secret: str, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`: id, timestamp, and the v1 signature."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "Content-Type": "application/json",
    }


def main(argv: list[str]) -> int:
    """Sign and send; print the relay's answer."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    route, body = argv
    json.loads(body)  # refuse to send what is not JSON
    secrets = os.environ.get("RELAY_WEBHOOK_SECRETS") or dotenv_values(SANDBOX_ENV).get(
        "RELAY_WEBHOOK_SECRETS"
    )
    if not secrets:
        print("no RELAY_WEBHOOK_SECRETS in the environment or var/sandbox.env", file=sys.stderr)
        return 2
    relay = os.environ.get("RELAY_URL", "http://127.0.0.1:8000").rstrip("/")
    answer = requests.post(
        f"{relay}/webhooks/{route}",
        data=body.encode(),
        headers=signed_headers(secrets.split(",")[0], body),
        timeout=10,
    )
    print(answer.status_code, answer.text.strip())
    return 0 if answer.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
