"""What workers run: translate records into Braze calls, batch them, deliver, retry, dead-letter."""
