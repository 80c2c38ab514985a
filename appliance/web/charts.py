"""History charts drawn as inline SVG on the server: no chart library, no script, no CDN.

The functions return plain dicts of coordinates and labels; the template draws
them. Coordinates live in a fixed ``viewBox`` and the SVG scales to the width
of the screen (phone or desktop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 62, 22, 10, 24
GAP_SECONDS = 20 * 60
"""Points further apart than this are not joined (night, an outage)."""


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    paths: list[str] = field(default_factory=list)
    bars: list[dict] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    unit: str = ""
    points: int = 0
    peak: float = 0.0

    @property
    def empty(self) -> bool:
        return self.points == 0

    @property
    def plot(self) -> dict[str, float]:
        return {"left": LEFT, "top": TOP, "right": self.width - RIGHT, "bottom": self.height - BOTTOM}


def nice_ceiling(value: float) -> float:
    """The next round number above ``value`` (1, 2, 2.5, 5 x 10^n) for the y axis."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _y_ticks(top_value: float, unit: str) -> list[tuple[float, str]]:
    ticks = []
    for i in range(5):
        value = top_value * i / 4
        y = HEIGHT - BOTTOM - (HEIGHT - BOTTOM - TOP) * i / 4
        text = f"{value / 1000:g} k{unit}" if top_value >= 1000 else f"{value:g} {unit}"
        ticks.append((round(y, 1), text))
    return ticks


def power_over_day(samples: list[tuple[float, float]], start: float, end: float, tz: ZoneInfo) -> Chart:
    """A line of ``(timestamp, watts)`` between ``start`` and ``end`` (one local day)."""
    chart = Chart(unit="W", points=len(samples))
    peak = max((w for _, w in samples), default=0.0)
    chart.peak = peak
    top = nice_ceiling(peak * 1.05)
    span_x = WIDTH - LEFT - RIGHT
    span_y = HEIGHT - TOP - BOTTOM

    def xy(ts: float, watts: float) -> str:
        x = LEFT + span_x * (ts - start) / (end - start)
        y = HEIGHT - BOTTOM - span_y * max(0.0, watts) / top
        return f"{x:.1f},{y:.1f}"

    def draw(points: list[str]) -> None:  # a lone reading between gaps is a dot, not lost
        if points:
            chart.paths.append("M" + " L".join(points) if len(points) > 1 else f"M{points[0]} l1,0")

    path: list[str] = []
    previous = None
    for ts, watts in samples:
        if previous is not None and ts - previous > GAP_SECONDS:
            draw(path)
            path = []
        path.append(xy(ts, watts))
        previous = ts
    draw(path)
    for hour in range(0, 25, 3):
        x = LEFT + span_x * hour / 24
        chart.x_ticks.append((round(x, 1), f"{hour:02d}:00"))
    chart.y_ticks = _y_ticks(top, "W")
    return chart


def energy_per_day(days: list[tuple[str, float]]) -> Chart:
    """Bars of ``(iso_day, wh)``, oldest first; a label every Monday (or every bar when few)."""
    chart = Chart(unit="Wh", points=len(days))
    peak = max((wh for _, wh in days), default=0.0)
    chart.peak = peak
    top = nice_ceiling(peak * 1.05)
    span_x = WIDTH - LEFT - RIGHT
    span_y = HEIGHT - TOP - BOTTOM
    slot = span_x / max(1, len(days))
    for i, (day, wh) in enumerate(days):
        height = span_y * max(0.0, wh) / top
        x = LEFT + i * slot
        chart.bars.append({
            "x": round(x + slot * 0.15, 1), "y": round(HEIGHT - BOTTOM - height, 1),
            "w": round(slot * 0.7, 1), "h": round(height, 1), "title": f"{day}: {wh / 1000:.2f} kWh",
        })
        date = datetime.fromisoformat(day)
        if len(days) <= 10 or date.weekday() == 0:
            chart.x_ticks.append((round(x + slot / 2, 1), date.strftime("%d %b")))
    chart.y_ticks = _y_ticks(top, "Wh")
    return chart
