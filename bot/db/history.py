"""Reading incidents back: the ones of some machines over a period (/history), one by its number, who pressed
its buttons and the samples around it (/history, /report)."""

from __future__ import annotations

from agent.vocabulary import DEVICE_RE, KNOWN_METRICS
from bot.db.samples import ChartPoint, ChartSeries, chart_series
from schema.domain import matches
from schema.tables import Aggregate, Event, Incident, KeptSample, Metric


def incidents_of(pattern: str, since: float, limit: int) -> tuple[list[Incident], int]:
    """The incidents of the machines matching `pattern` that were open at some moment since `since`, newest
    first: the first `limit` of them, and how many there are. Only ids and names are read for the count, so a
    storm of thousands costs one narrow query."""
    query = Incident.select(Incident.id, Incident.device).where(
        (Incident.opened_ts >= since) | Incident.resolved_ts.is_null() | (Incident.resolved_ts >= since))
    if DEVICE_RE.fullmatch(pattern):  # one machine's name (no * ? [): its index finds it
        query = query.where(Incident.device == pattern)
    ids = [incident_id for incident_id, device in
           query.order_by(Incident.opened_ts.desc(), Incident.id.desc()).tuples() if matches(pattern, device)]
    shown = {i.id: i for i in Incident.select().where(Incident.id.in_(ids[:limit]))} if ids else {}
    return [shown[i] for i in ids[:limit]], len(ids)


def incident(incident_id: int) -> Incident | None:
    """One incident by its number, or None."""
    return Incident.get_or_none(Incident.id == incident_id)


def presses(incident_ids: list[int]) -> dict[int, list[Event]]:
    """The buttons people pressed on these incidents, oldest first, by incident."""
    found: dict[int, list[Event]] = {i: [] for i in incident_ids}
    if incident_ids:
        for event in Event.select().where(Event.incident.in_(incident_ids) & (Event.what == "pressed")).order_by(
                Event.at, Event.id):
            found[event.incident_id].append(event)
    return found


def samples_around(device: str, start: float, end: float, metrics: list[str], rows: int) -> ChartSeries:
    """`metrics` of the device's samples from `start` to `end`: each one (`bucket_s` 0) when there are at most
    `rows` of them, all raw; else averaged in the database into at most `rows` stretches (see chart_series)."""
    if set(metrics) - set(KNOWN_METRICS):
        raise ValueError(f"not metric columns: {metrics}")
    # The raw samples, and those kept raw past the retention (see bot/db/retention.py): at most rows + 1 of each.
    raw = sorted((row for model in (Metric, KeptSample) for row in
                  model.select(model.ts, model.p_stressed, *(getattr(model, m) for m in metrics))
                  .where((model.device == device) & (model.ts >= start) & (model.ts <= end))
                  .order_by(model.ts).limit(rows + 1).tuples()), key=lambda row: row[0])[:rows + 1]
    downsampled = Aggregate.select().where((Aggregate.device == device) & (Aggregate.bucket >= start)
                                           & (Aggregate.bucket <= end)).exists()
    if len(raw) > rows or downsampled:
        return chart_series(device, start, end, metrics, rows)
    return ChartSeries(0, [ChartPoint(ts, ts, {m: v for m, v in zip(metrics, values, strict=True) if v is not None}, p)
                           for ts, p, *values in raw])
