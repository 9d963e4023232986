"""Small bar charts for the admin overview, drawn as inline SVG on the server (no script, no library).

The overview charts the last hour, a bar per minute: records delivered, and delivery lag (accepted
at the edge to delivered to Braze: the mean, and the bound under which 95% fell). Each bar carries
its minute and figure as data attributes and a <title>, so a browser (and a test) can read them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from relay.metrics import Minute

WIDTH, HEIGHT, PAD = 600, 120, 4


@dataclass(frozen=True)
class Bar:
    """One minute's bar: where it stands, its figure, and what its tooltip says."""

    x: float
    y: float
    width: float
    height: float
    minute: str  # HH:MM UTC
    value: float
    title: str


@dataclass(frozen=True)
class Chart:
    """A chart ready for the template."""

    name: str
    unit: str
    bars: list[Bar]
    peak: float  # the top of the scale
    total: str  # a one-line summary under the title
    width: int = WIDTH
    height: int = HEIGHT


def _bars(values: list[tuple[Minute, float, str]]) -> tuple[list[Bar], float]:
    peak = max((value for _, value, _ in values), default=0.0) or 1.0
    step = WIDTH / max(len(values), 1)
    bars = []
    for index, (minute, value, title) in enumerate(values):
        height = (HEIGHT - PAD) * value / peak
        label = time.strftime("%H:%M", time.gmtime(minute.start))
        bars.append(
            Bar(
                x=round(index * step + 0.5, 2),
                y=round(HEIGHT - height, 2),
                width=round(max(step - 1, 1), 2),
                height=round(height, 2),
                minute=label,
                value=value,
                title=f"{label} UTC: {title}",
            )
        )
    return bars, peak


def delivered_chart(minutes: list[Minute]) -> Chart:
    """Records delivered per minute."""
    bars, peak = _bars([(m, float(m.delivered), f"{m.delivered} delivered") for m in minutes])
    total = sum(m.delivered for m in minutes)
    return Chart("Delivered per minute", "records", bars, peak, f"{total} records in the last hour")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "over 30 min"
    return f"{value:.3g} s"


def lag_chart(minutes: list[Minute]) -> Chart:
    """Mean delivery lag per minute; each bar's title also gives the 95% bound."""
    values = [
        (
            m,
            m.lag_mean,
            f"mean lag {_seconds(m.lag_mean if m.delivered else None)}, 95% under {_seconds(m.lag_p95)}",
        )
        for m in minutes
    ]
    bars, peak = _bars(values)
    busy = [m for m in minutes if m.delivered]
    worst = max((m.lag_mean for m in busy), default=None)
    return Chart(
        "Delivery lag per minute", "seconds", bars, peak, f"worst minute's mean lag: {_seconds(worst)}"
    )
