"""The disk-failure model: P(a disk fails within 30 days) from its daily SMART readings, additive and monotone
like the machine model, trained on Backblaze's drive stats and shipped trained.

    model = load_shipped()
    for risk in model.predict(history):  # daily readings in Backblaze's column names
        if risk.alert:
            print(risk.serial, f"{risk.p:.0%}", risk.explanation)

P is on the scale of the training data: the Backblaze sample holds 60 drives that failed and 3,000 picked at
random among those that did not, so failures are more common in it than in a fleet. It ranks disks well, and
the alert threshold (`DiskModel.threshold`) was picked on that same scale, from held-out drives.

`python -m ml.disks evaluate PATH` scores it on held-out drives beside simple rules; `python -m ml.disks train
PATH` trains the model that ships.
"""

from __future__ import annotations

from ml.disks.risk import DiskModel, DiskRisk, Driver
from ml.disks.saved import SHIPPED, load, save
from ml.disks.training import train

__all__ = ["SHIPPED", "DiskModel", "DiskRisk", "Driver", "load", "load_shipped", "save", "train"]


def load_shipped() -> DiskModel:
    """The model that ships with Rigwatch, its SHA-256 checked against its record."""
    return load(SHIPPED)
