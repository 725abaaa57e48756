"""Machine tolerances, forecast holds and expected conditions: what people taught one machine with ❌, stored,
listed and removed."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from schema.tables import Expected, ForecastHold, Tolerance, db

log = logging.getLogger(__name__)


def tolerate(device: str, values: Mapping[str, float], incident_id: int | None, label_id: int | None, user_id: int,
             user_name: str, now: float) -> dict[str, float]:
    """Raise the device's tolerance of each metric to its value (a lower one is kept as it is); return those
    this raised. Call it inside the transaction that stores the press."""
    current = {t.metric: t for t in Tolerance.select().where(Tolerance.device == device)}
    raised = {}
    for metric, value in values.items():
        row = current.get(metric)
        if row is not None and row.value >= value:
            continue
        if row is None:
            row = Tolerance(device=device, metric=metric, created=now)
        row.value, row.incident, row.label, row.updated = value, incident_id, label_id, now
        row.user_id, row.user_name = user_id, user_name[:200]
        row.save()
        raised[metric] = value
    return raised


def tolerances(device: str | None = None) -> list[Tolerance]:
    """The tolerances of one device (or of all), by device and metric."""
    query = Tolerance.select().order_by(Tolerance.device, Tolerance.metric)
    return list(query.where(Tolerance.device == device) if device is not None else query)


def untolerate(device: str, metrics: Collection[str] | None = None, incident_id: int | None = None) -> list[str]:
    """Remove the device's tolerances of these metrics (all when None), or only those the incident set; return
    the metrics removed."""
    which = Tolerance.device == device
    if metrics is not None:
        which &= Tolerance.metric.in_(list(metrics))
    if incident_id is not None:
        which &= Tolerance.incident == incident_id
    with db.atomic():
        removed = [t.metric for t in Tolerance.select(Tolerance.metric).where(which)]
        Tolerance.delete().where(which).execute()
    return sorted(removed)


def hold(device: str, metric: str, incident_id: int | None, user_id: int, user_name: str, now: float) -> None:
    """No forecast of the device's metric alerts until the metric is back in its usual range."""
    ForecastHold.delete().where((ForecastHold.device == device) & (ForecastHold.metric == metric)).execute()
    ForecastHold.create(device=device, metric=metric, incident=incident_id, user_id=user_id,
                        user_name=user_name[:200], created=now)


def holds() -> set[tuple[str, str]]:
    """(device, metric) of every forecast on hold."""
    return {(h.device, h.metric) for h in ForecastHold.select(ForecastHold.device, ForecastHold.metric)}


def release(device: str, metric: str) -> None:
    """The metric is back in its usual range: its forecasts alert again."""
    ForecastHold.delete().where((ForecastHold.device == device) & (ForecastHold.metric == metric)).execute()


def expect(device: str, metric: str, incident_id: int | None, user_id: int, user_name: str, now: float) -> None:
    """A condition of one object of the device (its incident's metric) is expected there: it opens no incident."""
    Expected.delete().where((Expected.device == device) & (Expected.metric == metric)).execute()
    Expected.create(device=device, metric=metric, incident=incident_id, user_id=user_id, user_name=user_name[:200],
                    created=now)


def expected(device: str | None = None) -> list[Expected]:
    """The expected conditions of one device (or of all), by device and metric."""
    query = Expected.select().order_by(Expected.device, Expected.metric)
    return list(query.where(Expected.device == device) if device is not None else query)


def unexpect(device: str, incident_id: int | None = None) -> list[str]:
    """Make the device's conditions (all, or the one a ❌ on the incident made expected) alert again; return
    their metrics."""
    which = Expected.device == device
    if incident_id is not None:
        which &= Expected.incident == incident_id
    with db.atomic():
        removed = [e.metric for e in Expected.select(Expected.metric).where(which)]
        Expected.delete().where(which).execute()
    return sorted(removed)


def signature() -> tuple[object, ...]:
    """Changes whenever a tolerance, a hold or an expected condition is added, raised or removed: one cheap
    statement on three small tables, so every process sees another's change at its next batch."""
    row = db.execute_sql(
        f"SELECT (SELECT COUNT(*) FROM {Tolerance._meta.table_name}), "
        f"(SELECT MAX(updated) FROM {Tolerance._meta.table_name}), "
        f"(SELECT COUNT(*) FROM {ForecastHold._meta.table_name}), "
        f"(SELECT MAX(id) FROM {ForecastHold._meta.table_name}), "
        f"(SELECT COUNT(*) FROM {Expected._meta.table_name}), "
        f"(SELECT MAX(id) FROM {Expected._meta.table_name})").fetchone()
    return tuple(row)

