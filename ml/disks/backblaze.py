"""Reading Backblaze's drive stats: one CSV per day, plain or gzipped, in a folder or as a single file.

Backblaze names its columns date, serial_number, model, capacity_bytes, failure, smart_N_raw and
smart_N_normalized, and its years differ in which attributes they carry. Every attribute the disk model knows is
read when a file has it and is NaN when it does not, never 0: a drive that does not report 187 has not reported
zero errors. The bot's stored readings use the same column names, so `tidy` is also how they come in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# The SMART attributes read: the five counts of bad sectors and errors the model uses, power-on hours (9) for
# its age, and raw read errors (1) and temperature (194), which the table of a drive shows beside them.
SMART = (1, 5, 9, 187, 188, 194, 197, 198)
SMART_COLUMNS = [f"smart_{number}_{kind}" for number in SMART for kind in ("raw", "normalized")]
COLUMNS = ["date", "serial_number", "model", "capacity_bytes", "failure", *SMART_COLUMNS]
SUFFIXES = (".csv", ".csv.gz")


def files(path: str | Path) -> list[Path]:
    """The daily CSV files at `path`: the file itself, or every .csv and .csv.gz under the folder, by name."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is neither a file nor a folder")
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
    if not found:
        raise FileNotFoundError(f"{root} holds no .csv or .csv.gz file")
    return found


def read(path: str | Path) -> pd.DataFrame:
    """Every reading in the CSV files at `path` (see `files`), tidied: one row per drive and day."""
    frames = [
        pd.read_csv(name, usecols=lambda column: column in COLUMNS, dtype={"serial_number": str, "model": str})
        for name in files(path)
    ]
    return tidy(pd.concat(frames, ignore_index=True))


def tidy(readings: pd.DataFrame) -> pd.DataFrame:
    """Readings with every column of COLUMNS (NaN where absent), dates as days, sorted by drive then date.

    A row without a serial number or a date names no reading and is dropped; of two readings of one drive on
    one day the later row is kept. `failure` is 1 on the day a drive failed, 0 otherwise (and when absent).
    """
    missing = [name for name in ("serial_number", "date") if name not in readings.columns]
    if missing:
        raise ValueError(f"the readings have no {' and no '.join(missing)} column")
    out = pd.DataFrame(index=readings.index)
    out["date"] = pd.to_datetime(readings["date"], errors="coerce").dt.normalize()
    out["serial_number"] = readings["serial_number"].astype(object).where(readings["serial_number"].notna())
    out["serial_number"] = out["serial_number"].map(lambda s: s.strip() if isinstance(s, str) else s)
    model = readings["model"] if "model" in readings.columns else pd.Series(np.nan, index=readings.index)
    out["model"] = model.astype(object).map(lambda m: m.strip() if isinstance(m, str) and m.strip() else None)
    for name in ["capacity_bytes", *SMART_COLUMNS]:
        present = name in readings.columns
        out[name] = pd.to_numeric(readings[name], errors="coerce").astype(float) if present else np.nan
    present = "failure" in readings.columns
    out["failure"] = (pd.to_numeric(readings["failure"], errors="coerce") == 1).astype(int) if present else 0
    out = out.dropna(subset=["serial_number", "date"])
    out = out[out["serial_number"] != ""]
    out = out.drop_duplicates(["serial_number", "date"], keep="last")
    return out.sort_values(["serial_number", "date"], kind="stable").reset_index(drop=True)[COLUMNS]
