"""Disks: each disk's SMART readings, kept day by day, judged by the disk model (ml/disks/): P(it fails within 30
days) and what drove it. The decisions of a batch (bot/pipeline/decide.py) open one incident per disk whose P
reaches the model's threshold; it never recovers by itself (a disk does not heal), only by a person's ✅ replaced
or ❌ wrong, or by the disk leaving the machine (missing from its SMART readings, and not because its SMART could
not be read).

The disk model lives in the model store beside the machine model, under `disks/`, versioned and signed the same
way; an empty one gets the model that ships with Rigwatch. A disk is judged again when its readings change or a
day begins: SMART changes slowly, and the agent reads it every few minutes.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.vocabulary import READINGS
from bot.db import disks
from bot.db.samples import StoredSample
from ml import artifact
from ml.disks import SHIPPED, DiskModel
from ml.disks.saved import record_path
from ml.store import ModelStore, StoreError
from schema.conditions import disk_of
from schema.tables import DiskDay

log = logging.getLogger(__name__)
SMART = tuple(name for name in READINGS if name.startswith("smart_") and name.endswith("_raw"))
HEALTH = "smart_health"


class ActiveDiskModel:
    """The disk model in use, loaded from its store; every method but `current` blocks on the store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._current: tuple[int, DiskModel] | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> DiskModel | None:
        return self._current[1] if self._current else None

    @property
    def version(self) -> int | None:
        return self._current[0] if self._current else None

    def ensure(self) -> None:
        """Load the active version; into an empty store, first the model that ships. Raises StoreError."""
        with self._lock:
            if not self.store.versions():
                meta = json_meta()
                saved = self.store.save(SHIPPED.read_bytes(), meta)
                self.store.activate(saved.version)
                log.info("disk model store %s was empty: saved the shipped disk model as v%d", self.store.describe,
                         saved.version)
            active = self.store.active()
            if active is not None and active != self.version:
                self._load(active)

    def activate(self, version: int) -> None:
        """Make `version` active in the store and here; raises StoreError and keeps the current one."""
        with self._lock:
            self._load(version)
            self.store.activate(version)

    def _load(self, version: int) -> None:
        record = next((v for v in self.store.versions() if v.version == version), None)
        if record is None or "threshold" not in record.meta:
            raise StoreError(f"{self.store.describe}: disk model v{version} has no alert threshold")
        self._current = (version, DiskModel(artifact.loads(self.store.load(version)), float(record.meta["threshold"]),
                                            record.meta))
        log.info("disk model v%d is active", version)


def json_meta() -> dict:
    """The metadata the shipped disk model was saved with (its threshold and held-out figures)."""
    return json.loads(record_path(SHIPPED).read_text())["meta"]


@dataclass(frozen=True)
class Disk:
    """One disk as a sample shows it, and the disk model's verdict on its readings up to then."""

    device: str
    disk: str  # its name on the machine
    serial: str
    model: str
    p: float | None
    alert: bool
    explanation: str


class Disks:
    """Reads the disks of samples: keeps their days, asks the disk model when their readings changed."""

    def __init__(self, model: ActiveDiskModel | None) -> None:
        self.model = model
        self._seen: dict[str, tuple[str, str, Disk]] = {}  # serial -> (day, readings as text, verdict)
        self._lock = threading.Lock()

    def observe(self, sample: StoredSample) -> list[Disk] | None:
        """The disks of a sample with SMART readings (None: it carries none), each with its verdict; blocks on the
        store, in the batch's transaction."""
        readings = sample.readings or {}
        health = readings.get(HEALTH)
        if health is None:
            return None
        day = datetime.fromtimestamp(sample.ts, UTC).date().isoformat()
        notes = (sample.notes or {}).get(HEALTH, {})
        found = []
        with self._lock:
            for disk in health:
                model, serial = disk_of(notes.get(disk))
                serial = serial or f"{sample.device}:{disk}"  # a disk that names no serial: by its machine and name
                values = {name: readings[name][disk] for name in SMART if disk in readings.get(name, {})}
                text = repr(sorted(values.items()))
                seen = self._seen.get(serial)
                if seen is not None and seen[:2] == (day, text):
                    found.append(seen[2])
                    continue
                row = disks.record(sample.device, disk, serial, model or None, day, sample.ts, values)
                verdict = self._judge(row, Disk(sample.device, disk, serial, model, None, False, ""))
                self._seen[serial] = (day, text, verdict)
                found.append(verdict)
        return found

    def name_of(self, serial: str) -> str | None:
        """The name on its machine of the disk of this serial, as last seen ("sdb"); None for a disk never seen."""
        with self._lock:
            seen = self._seen.get(serial)
        if seen is not None:
            return seen[2].disk
        row = disks.last_seen(serial)
        return row.disk if row is not None else None

    def _judge(self, row: DiskDay, disk: Disk) -> Disk:
        current = self.model.current if self.model is not None else None
        if current is None:
            return disk
        risks = current.predict(disks.history(disk.serial))
        if not risks:
            return disk
        risk = risks[0]
        disks.judged(row, risk.p, risk.alert, risk.explanation)
        return Disk(disk.device, disk.disk, disk.serial, disk.model, risk.p, risk.alert, risk.explanation)
