"""The admin overview's bar charts (receiver/admin/charts.py): pure, exact, one bar per minute."""

from __future__ import annotations

import math

from receiver.admin.charts import HEIGHT, PAD, WIDTH, delivered_chart, lag_chart
from relay.metrics import Minute

START = 1_764_000_000 - 1_764_000_000 % 60  # a whole minute: 16:00 UTC
QUIET = Minute(START, 0, 0.0, None)
BUSY = Minute(START + 60, 40, 1.5, 2.5)
BUSIEST = Minute(START + 120, 80, 0.25, math.inf)


def test_delivered_bars_scale_to_the_busiest_minute() -> None:
    """Each minute is a bar side by side; the busiest fills the height, the others in proportion."""
    chart = delivered_chart([QUIET, BUSY, BUSIEST])
    assert [bar.minute for bar in chart.bars] == ["16:00", "16:01", "16:02"]
    assert [bar.value for bar in chart.bars] == [0.0, 40.0, 80.0]
    assert [bar.height for bar in chart.bars] == [0.0, (HEIGHT - PAD) / 2, HEIGHT - PAD]
    assert all(math.isclose(bar.y + bar.height, HEIGHT) for bar in chart.bars)
    assert chart.bars[1].x - chart.bars[0].x == WIDTH / 3
    assert chart.bars[2].title == "16:02 UTC: 80 delivered"
    assert (chart.peak, chart.total) == (80.0, "120 records in the last hour")


def test_lag_bars_say_the_mean_and_the_95_percent_bound() -> None:
    """A lag bar is the minute's mean; its title gives the 95% bound, 'over 30 min' past the last bucket,
    and '-' for a minute with no delivery."""
    chart = lag_chart([QUIET, BUSY, BUSIEST])
    assert [bar.value for bar in chart.bars] == [0.0, 1.5, 0.25]
    assert chart.bars[0].title == "16:00 UTC: mean lag -, 95% under -"
    assert chart.bars[1].title == "16:01 UTC: mean lag 1.5 s, 95% under 2.5 s"
    assert chart.bars[2].title == "16:02 UTC: mean lag 0.25 s, 95% under over 30 min"
    assert chart.total == "worst minute's mean lag: 1.5 s"


def test_an_hour_without_deliveries_draws_flat_bars() -> None:
    """No delivery at all: every bar is flat (no division by zero), the summary says so."""
    quiet = [Minute(START + 60 * n, 0, 0.0, None) for n in range(60)]
    delivered, lag = delivered_chart(quiet), lag_chart(quiet)
    assert len(delivered.bars) == 60 and {bar.height for bar in delivered.bars} == {0.0}
    assert delivered.total == "0 records in the last hour"
    assert lag.total == "worst minute's mean lag: -"
    assert delivered_chart([]).bars == []
