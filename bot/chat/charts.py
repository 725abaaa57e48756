"""Charts as PNG images for Telegram: one machine's metrics, P(stressed) and its stressed stretches; and the
fleet's incidents a day, for the digest.

Drawn with matplotlib's Agg renderer on a Figure of its own (no pyplot, no display). Every function here
blocks: the bot calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from datetime import UTC, date
from typing import TYPE_CHECKING

import numpy as np

from bot import db
from bot.db import ChartPoint, ChartSeries
from schema.domain import Kind

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Span = tuple[float, float]  # (start_ts, end_ts) of a stretch to shade

# At most four lines in a panel: more cannot be told apart on a phone.
METRICS = {"cpu_percent": "CPU", "mem_percent": "Memory", "swap_percent": "Swap", "disk_percent": "Disk"}
COLOURS = {"cpu_percent": "#0072B2", "mem_percent": "#E69F00", "swap_percent": "#CC79A7", "disk_percent": "#009E73"}
P_COLOUR = "#D55E00"
SHADE = {"color": "#D55E00", "alpha": 0.15, "linewidth": 0}
GAP_BUCKETS = 3  # no sample for this many buckets (and typical steps) breaks the lines: the machine was silent
FONT_SIZE = 15
WIDTH_IN, HEIGHT_IN, DPI = 8.0, 7.0, 100  # 800 x 700 px: sharp on a phone, tens of KB as a PNG
# The kinds of incident, bottom to top of a day's bar, in the same colour-blind-safe palette as the lines.
KINDS = {Kind.STRESSED: ("stressed", P_COLOUR), Kind.SILENT: ("silent", "#999999"),
         Kind.FORECAST: ("forecast", "#0072B2"), Kind.CONDITION: ("problems", "#E69F00")}

# matplotlib is not thread-safe, and two /status commands may render at once in the bot's thread pool.
_lock = threading.Lock()


def render_chart(device: str, start_ts: float, end_ts: float, threshold: float, spans: list[Span],
                 disk: str = METRICS["disk_percent"]) -> bytes:
    """The PNG chart of `device` from `start_ts` to `end_ts`, shading `spans` (its incidents); `disk` names the
    disk line (the fullest filesystem). Reads the store."""
    series = db.chart_series(device, start_ts, end_ts, list(METRICS))
    return draw(device, series, start_ts, end_ts, threshold, spans, disk)


def _gaps(series: ChartSeries) -> set[int]:
    """Indexes of the points after which the device was silent: the lines are broken there."""
    points = series.points
    if len(points) < 2:
        return set()
    steps = np.diff([p.first_ts for p in points])
    limit = GAP_BUCKETS * max(series.bucket_s, float(np.median(steps)))
    return {i for i, step in enumerate(steps) if step > limit}


def _with_breaks(series: ChartSeries) -> tuple[np.ndarray, list[ChartPoint | None]]:
    """The points' times (the middle of each bucket's samples) and the points, with a None inserted in each
    silence so that matplotlib draws no line across it."""
    gaps = _gaps(series)
    times: list[float] = []
    points: list[ChartPoint | None] = []
    for index, point in enumerate(series.points):
        times.append((point.first_ts + point.last_ts) / 2)
        points.append(point)
        if index in gaps:
            times.append(point.last_ts + series.bucket_s)
            points.append(None)
    return _datetimes(times), points


def _datetimes(timestamps: list[float]) -> np.ndarray:
    return (np.asarray(timestamps, dtype=float) * 1000).astype("datetime64[ms]")


def _figure(height_in: float) -> Figure:
    """A figure of its own, drawn by Agg. matplotlib is imported with the first chart: a third of a second of CPU
    that a starting bot need not spend before it takes samples in."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def draw(device: str, series: ChartSeries, start_ts: float, end_ts: float, threshold: float,
         spans: list[Span], disk: str = METRICS["disk_percent"]) -> bytes:
    """Two panels sharing the time axis (UTC): the metrics in percent, and P(stressed) with the threshold."""
    times, points = _with_breaks(series)
    with _lock:
        figure = _figure(HEIGHT_IN)
        # Fixed margins: the fonts and labels are fixed, and an automatic layout would double the drawing time.
        metrics_axes, p_axes = figure.subplots(
            2, 1, sharex=True, height_ratios=(3, 2),
            gridspec_kw={"left": 0.11, "right": 0.96, "top": 0.86, "bottom": 0.1, "hspace": 0.1},
        )
        figure.suptitle(device, x=0.02, y=0.985, ha="left", va="top", fontsize=FONT_SIZE + 3, fontweight="bold")
        for name, label in {**METRICS, "disk_percent": disk}.items():
            values = [np.nan if p is None else p.metrics.get(name, np.nan) for p in points]
            if not all(np.isnan(values)):
                metrics_axes.plot(times, values, color=COLOURS[name], linewidth=2.2, label=label)
        p_values = [np.nan if p is None or p.p_stressed is None else 100 * p.p_stressed for p in points]
        p_axes.plot(times, p_values, color=P_COLOUR, linewidth=2.2)
        p_axes.axhline(100 * threshold, color="#333333", linestyle="--", linewidth=1.5)
        p_axes.annotate(f"alert at {100 * threshold:.0f}%", (0, 100 * threshold), xycoords=("axes fraction", "data"),
                        xytext=(4, 4), textcoords="offset points", fontsize=FONT_SIZE - 3, color="#333333")
        for first, last in spans:
            for axes in (metrics_axes, p_axes):
                axes.axvspan(*_datetimes([max(first, start_ts), min(last, end_ts)]), **SHADE)
        _style(metrics_axes, p_axes, start_ts, end_ts)
        if metrics_axes.get_legend_handles_labels()[0]:
            metrics_axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=4, frameon=False,
                                fontsize=FONT_SIZE, handlelength=1.2, columnspacing=1.0, borderaxespad=0.2)
        if not series.points:
            metrics_axes.text(0.5, 0.5, f"no sample of {device} in this window", transform=metrics_axes.transAxes,
                              ha="center", va="center", fontsize=FONT_SIZE)
        output = io.BytesIO()
        figure.savefig(output, format="png", dpi=DPI, metadata={"Software": None})
    return output.getvalue()


def _style(metrics_axes: Axes, p_axes: Axes, start_ts: float, end_ts: float) -> None:
    """Large fonts, a 0-100 % scale on both panels, and times in UTC as short as they can be."""
    from matplotlib import dates as mdates

    for axes, ylabel in ((metrics_axes, "%"), (p_axes, "P(stressed) %")):
        axes.set_ylim(0, 100)
        axes.set_yticks([0, 25, 50, 75, 100])
        axes.set_ylabel(ylabel, fontsize=FONT_SIZE)
        axes.tick_params(labelsize=FONT_SIZE - 1)
        axes.grid(True, color="#dddddd", linewidth=0.8)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
    p_axes.set_xlim(*_datetimes([start_ts, end_ts]))
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=6)
    p_axes.xaxis.set_major_locator(locator)
    p_axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    p_axes.set_xlabel("UTC", fontsize=FONT_SIZE - 2)


def incidents_per_day(days: list[date], counts: list[Counter[Kind]], title: str) -> bytes:
    """The PNG of the incidents opened each day, one stacked bar a day by kind, days in the bot's time zone."""
    with _lock:
        figure = _figure(HEIGHT_IN * 0.7)
        axes = figure.subplots(gridspec_kw={"left": 0.09, "right": 0.98, "top": 0.8, "bottom": 0.12})
        figure.suptitle(title, x=0.02, y=0.98, ha="left", va="top", fontsize=FONT_SIZE + 3, fontweight="bold")
        positions = np.arange(len(days))
        bottom = np.zeros(len(days))
        for kind, (label, colour) in KINDS.items():
            heights = np.array([day[kind] for day in counts], dtype=float)
            axes.bar(positions, heights, bottom=bottom, color=colour, label=label, width=0.75)
            bottom += heights
        # Every other day is named, today always: fourteen names would not fit a phone's width.
        axes.set_xticks(positions, [f"{day:%a}\n{day.day}" if (len(days) - 1 - i) % 2 == 0 else ""
                                    for i, day in enumerate(days)])
        axes.set_xlim(-0.6, len(days) - 0.4)
        axes.set_ylim(0, max(4.0, bottom.max() * 1.1))
        axes.yaxis.get_major_locator().set_params(integer=True)
        axes.tick_params(labelsize=FONT_SIZE - 2)
        axes.grid(True, axis="y", color="#dddddd", linewidth=0.8)
        axes.set_axisbelow(True)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=4, frameon=False, fontsize=FONT_SIZE - 1,
                    handlelength=1.0, columnspacing=1.0, borderaxespad=0.2)
        output = io.BytesIO()
        figure.savefig(output, format="png", dpi=DPI, metadata={"Software": None})
    return output.getvalue()
