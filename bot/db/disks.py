"""Disks: each disk's SMART readings day by day, the disk model's verdict on them, and people's labels."""

from __future__ import annotations

import json
import time

import pandas as pd
import peewee as pw

from schema.tables import DiskDay, DiskLabel

HISTORY_DAYS = 30  # what the disk model reads of a disk's past


def record(device: str, disk: str, serial: str, model: str | None, day: str, ts: float,
           values: dict[str, float]) -> DiskDay:
    """Keep a disk's newest readings of the day (replacing the day's earlier ones); returns its row."""
    row = DiskDay.get_or_none((DiskDay.serial == serial) & (DiskDay.day == day))
    if row is None:
        row = DiskDay(serial=serial, day=day)
    row.device, row.disk, row.model, row.ts, row.values = device, disk, model, ts, json.dumps(values)
    row.save()
    return row


def last_seen(serial: str) -> DiskDay | None:
    """A disk's newest day."""
    return DiskDay.select().where(DiskDay.serial == serial).order_by(DiskDay.day.desc()).first()


def judged(row: DiskDay, p: float, alert: bool, explanation: str) -> None:
    """The disk model's verdict on a day's readings."""
    DiskDay.update(p=p, alert=alert, explanation=explanation[:1000]).where(DiskDay.id == row.id).execute()


def history(serial: str, days: int = HISTORY_DAYS) -> pd.DataFrame:
    """A disk's daily readings of its last `days`, in Backblaze's column names (serial_number, date, model,
    smart_N_raw), oldest first: what the disk model reads."""
    rows = list(DiskDay.select().where(DiskDay.serial == serial).order_by(DiskDay.day.desc()).limit(days))
    return pd.DataFrame([{"serial_number": r.serial, "date": r.day, "model": r.model, **json.loads(r.values)}
                         for r in reversed(rows)])


def every_day() -> pd.DataFrame:
    """Every disk's daily readings, to train the disk model on the fleet's own disks."""
    return pd.DataFrame([{"serial_number": r.serial, "date": r.day, "model": r.model, **json.loads(r.values)}
                         for r in DiskDay.select().order_by(DiskDay.serial, DiskDay.day)])


def latest(device: str | None = None) -> list[DiskDay]:
    """Each disk's newest day (of one device, or of the fleet), riskiest first."""
    newer = DiskDay.alias()
    newest = DiskDay.day == newer.select(pw.fn.MAX(newer.day)).where(newer.serial == DiskDay.serial)
    query = DiskDay.select().where(newest if device is None else newest & (DiskDay.device == device))
    return sorted(query, key=lambda r: (-(r.p or 0.0), r.device, r.disk))


def label(serial: str, device: str, value: int, user_id: int, user_name: str) -> None:
    """A person's verdict on a disk: 1 = it was failing, 0 = it was fine."""
    DiskLabel.create(serial=serial, device=device, value=value, user_id=user_id, user_name=user_name[:200],
                     created=time.time())


def labels() -> dict[str, int]:
    """serial -> the value of its latest label."""
    return {row.serial: row.value for row in DiskLabel.select().order_by(DiskLabel.created, DiskLabel.id)}
