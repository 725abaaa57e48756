"""The database room: every query the bot runs. It imports neither the pipeline, the chat nor Telegram.

Every function here blocks: callers on the event loop go through ``asyncio.to_thread``. The tables themselves
live in `schema`, which ml/ reads too.
"""

from bot.db.connection import (
    CHECKPOINT_S,
    checkpoint,
    checkpoint_in_background,
    is_postgres,
    open_database,
    reachable,
)
from bot.db.held_parts import HeldParts
from bot.db.incidents import (
    add_label,
    count_mutes,
    incident_for_button,
    incident_spans,
    mute,
    mutes,
    muting,
    silent_devices,
    unmute,
)
from bot.db.ingest import COLUMNS, Origin, Rejection, beat, intake, known_values, store_batch
from bot.db.routing import subscribe, subscriptions, unsubscribe
from bot.db.samples import (
    CHART_POINTS,
    DEVICES_CTE,
    ChartPoint,
    ChartSeries,
    StoredSample,
    chart_series,
    device_count,
    devices,
    history_points,
    latest_per_device,
    latest_sample,
    recent_per_device,
    rejected,
    sample_by_id,
)
from schema.tables import (
    TABLES,
    Aggregate,
    Device,
    Digest,
    ForecastHold,
    ForecastLabel,
    HeldPart,
    Incident,
    Label,
    Metric,
    Mute,
    Notice,
    Rejected,
    Subscription,
    Tolerance,
    db,
)

transaction = db.atomic

__all__ = [
    "CHART_POINTS", "CHECKPOINT_S", "COLUMNS", "DEVICES_CTE", "TABLES", "Aggregate", "ChartPoint", "ChartSeries",
    "Device", "Digest", "ForecastHold", "ForecastLabel", "HeldPart", "HeldParts", "Incident", "Label", "Metric",
    "Mute", "Notice", "Origin", "Rejected",
    "Rejection", "StoredSample", "Subscription", "Tolerance", "add_label", "beat", "chart_series", "checkpoint",
    "checkpoint_in_background", "count_mutes", "db", "device_count", "devices", "history_points", "incident_for_button",
    "incident_spans", "intake", "is_postgres", "known_values", "latest_per_device", "latest_sample", "mute",
    "mutes", "muting", "open_database", "reachable", "recent_per_device", "rejected", "sample_by_id",
    "silent_devices", "store_batch", "subscribe", "subscriptions", "transaction", "unmute", "unsubscribe",
]
