"""What the bot says about forecasts: where disk, memory, swap and each filesystem are heading, under
/status <device>, in a forecast's alert and in the digest."""

from __future__ import annotations

from collections.abc import Mapping

from agent.vocabulary import KNOWN_METRICS
from bot.chat import tolerance
from bot.chat.formatting import clip, disk_label, escape, number, usual_range, when
from bot.pipeline import tolerating
from bot.pipeline.baselines import Usual
from bot.pipeline.forecast import BUCKET_S, MIN_BUCKETS, Forecast
from ml.features import ZONES
from schema.conditions import CONDITIONS
from schema.domain import FILESYSTEM, INODES

FORECAST_WORDS = {"disk_percent": "disk", "mem_percent": "memory", "swap_percent": "swap"}


def how_soon(eta_s: float) -> str:
    """How soon, as people say it: 'in about 3 h', 'in about 40 min', 'in about 5 d'."""
    if eta_s < 5 * 60:
        return "within minutes"
    if eta_s < 90 * 60:
        return f"in about {round(eta_s / 300) * 5} min"
    if eta_s < 48 * 3600:
        return f"in about {round(eta_s / 3600)} h"
    return f"in about {round(eta_s / 86400)} d"


def forecast_word(metric: str) -> str:
    """'disk', 'memory', 'swap', a filesystem's mount point ('/data'), or its inodes ('the inodes of /var')."""
    if metric.startswith(INODES):
        return f"the inodes of {metric.removeprefix(INODES)}"
    return metric.removeprefix(FILESYSTEM) if metric.startswith(FILESYSTEM) else FORECAST_WORDS[metric]


def forecast_line(f: Forecast) -> str:
    """'/data will be full in about 3 h (now 91 %, +2.1 %/h)'."""
    if f.metric.startswith(INODES):
        when_out = "has run out of inodes" if f.eta_s == 0 else f"will run out of inodes {how_soon(f.eta_s or 0)}"
        return f"{f.metric.removeprefix(INODES)} {when_out} (now {number(f.level)} % used, {f.slope_per_h:+.1f} %/h)"
    word = forecast_word(f.metric)
    when_full = "is at its edge now" if f.eta_s == 0 else f"will be full {how_soon(f.eta_s or 0)}"
    return f"{word} {when_full} (now {number(f.level)} %, {f.slope_per_h:+.1f} %/h)"


def forecast_summary(forecasts: Mapping[str, Forecast | None], horizon_s: float, restoring: bool = False) -> str:
    """/status: the forecasts that reach an edge within the horizon, or why there are none (`restoring`: the
    machine's trends are still being read back after a start)."""
    hours = f"{horizon_s / 3600:g} h"
    if restoring:
        return "Forecast: the trends are being read back after a restart; ask again in a moment"
    if not forecasts:
        return "Forecast: no disk, memory or swap reported"
    if all(f is None for f in forecasts.values()):
        return f"Forecast: none yet, a trend needs {MIN_BUCKETS * BUCKET_S / 60:.0f} min of samples"
    near = [f for f in forecasts.values() if f is not None and f.within(horizon_s)]
    if not near:
        return f"Forecast: no trend toward an edge within {hours}"
    return "Forecast:\n" + "\n".join(f"• {escape(forecast_line(f))}" for f in near)


def forecast_alert(forecast: Forecast, usual: Usual | None, tolerated: Mapping[str, float] | None = None) -> str:
    """'pc1: /data will be full in about 3 h (now 91 %, +2.1 %/h)', with the usual range and the edge (the
    machine's own when it tolerates the metric)."""
    if forecast.metric.startswith(INODES):
        return clip(f"📈 <b>{escape(forecast.device)}</b>: {escape(forecast_line(forecast))}\n"
                    f"No new file can be made there once they run out, even with space left.\n"
                    f"What to do: {escape(CONDITIONS['inodes_filling'].todo)}\n"
                    f"Trend of the last hours up to the sample of {when(forecast.ts)}. Was this forecast right?")
    filesystem = forecast.metric.startswith(FILESYSTEM)
    model_metric = "disk_percent" if filesystem else forecast.metric
    edge = tolerating.edge(model_metric, (tolerated or {}).get(forecast.metric, (tolerated or {}).get(model_metric)))
    own = " on this machine" if edge != ZONES[model_metric].edge else ""
    label = disk_label(forecast_word(forecast.metric)) if filesystem else KNOWN_METRICS[model_metric][0]
    usual_text = f"usually {usual_range(model_metric, usual)}; " if usual else (
        "" if filesystem else "no usual range yet; ")
    return clip(
        f"📈 <b>{escape(forecast.device)}</b>: {escape(forecast_line(forecast))}\n"
        f"{escape(label)} on {escape(forecast.device)}: {usual_text}it needs an intervention from "
        f"{tolerance.tolerance_value(model_metric, edge)}{own}.\n"
        f"Trend of the last hours up to the sample of {when(forecast.ts)}. Was this forecast right?"
    )
