"""A small wall-clock sampling profiler for a gunicorn worker (py-spy is not installed here).

A daemon thread looks at the main thread's stack every `interval` seconds and counts, per function,
the samples where it is on the stack (inclusive) and where it is the innermost frame (own). Every
couple of seconds and at exit it writes the counts to $BENCH_PROFILE_DIR/<pid>.json. Samples where
the worker waits for a connection (gunicorn's accept/select) are counted too, as idle. It sets the
interpreter's switch interval to 0.1 ms so samples are spread over time, not bunched at I/O calls.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

STDLIB = re.compile(r".*/lib/python3\.\d+/")
CHECKOUT = f"{Path(__file__).resolve().parent.parent}/"  # this checkout, wherever it lies


def _label(code: object) -> str:
    """'path:function', the path relative to site-packages, the checkout or the standard library."""
    filename = code.co_filename  # type: ignore[attr-defined]
    for marker in ("site-packages/", CHECKOUT):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:
        filename = STDLIB.sub("", filename)
    return f"{filename}:{code.co_name}"  # type: ignore[attr-defined]


class StackSampler(threading.Thread):
    """Samples the thread that started it."""

    def __init__(self, out_dir: str, interval: float = 0.002) -> None:
        super().__init__(name="bench-stack-sampler", daemon=True)
        self.target = threading.get_ident()
        self.out = Path(out_dir) / f"{os.getpid()}.json"
        self.interval = interval
        self.samples = 0
        self.inclusive: Counter[str] = Counter()
        self.own: Counter[str] = Counter()
        self.lock = threading.Lock()

    def run(self) -> None:
        """Sample until the process exits."""
        last_write = time.monotonic()
        while True:
            time.sleep(self.interval)
            frame = sys._current_frames().get(self.target)
            if frame is None:
                continue
            seen = set()
            leaf = _label(frame.f_code)
            while frame is not None:
                seen.add(_label(frame.f_code))
                frame = frame.f_back
            with self.lock:
                self.samples += 1
                self.own[leaf] += 1
                self.inclusive.update(seen)
            if time.monotonic() - last_write > 2.0:
                self.write()
                last_write = time.monotonic()

    def write(self) -> None:
        """Write the counts so far."""
        with self.lock:
            data = {"samples": self.samples, "inclusive": dict(self.inclusive), "own": dict(self.own)}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.out)


def start() -> None:
    """Start sampling this thread if $BENCH_PROFILE_DIR is set."""
    out_dir = os.environ.get("BENCH_PROFILE_DIR")
    if not out_dir:
        return
    # The sampler only runs when the main thread lets go of the GIL: at I/O, or when the interpreter
    # forces a switch (every 5 ms by default, longer than a whole request). A short switch interval
    # makes the samples land at any bytecode, so they measure time rather than I/O calls.
    sys.setswitchinterval(0.0001)
    sampler = StackSampler(out_dir)
    sampler.start()
    atexit.register(sampler.write)


def merge(out_dir: Path) -> dict:
    """The counts of every process that wrote to `out_dir`, added up."""
    samples = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for path in out_dir.glob("*.json"):
        data = json.loads(path.read_text())
        samples += data["samples"]
        inclusive.update(data["inclusive"])
        own.update(data["own"])
    return {"samples": samples, "inclusive": inclusive, "own": own}
