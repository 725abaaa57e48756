"""The disk-failure model: Backblaze's files read as they are, risks that are monotone and say what drove them,
held-out figures from the command line that its CSV recomputes, and the model that ships."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ml.disks import SHIPPED, DiskModel, load, load_shipped, train
from ml.disks import evaluate as disk_evaluate
from ml.disks.__main__ import main, parser
from ml.disks.backblaze import read
from ml.disks.features import COUNTS, features
from ml.disks.labels import failed_on
from ml.disks.model import predict
from ml.disks.saved import record_path
from ml.store import ChecksumMismatch

SLICE = Path(__file__).with_name("backblaze") / "drives-2013-slice.csv.gz"
COUNT_GRID = [0, 1, 2, 3, 5, 8, 13, 21, 40, 64, 100, 200, 500, 1_000, 3_000, 10_000, 65_535, 200_000]


@pytest.fixture(scope="module")
def readings() -> pd.DataFrame:
    return read(SLICE)


@pytest.fixture(scope="module")
def shipped() -> DiskModel:
    return load_shipped()


def drive(serial: str, reallocated: list[float], pending: list[float] | None = None,
          model: str = "ST3000DM001") -> pd.DataFrame:
    """One reading a day of one drive, in Backblaze's column names; no pending column unless given."""
    days = pd.date_range("2024-03-01", periods=len(reallocated))
    frame = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "serial_number": serial, "model": model,
                          "smart_5_raw": reallocated, "smart_9_raw": 20_000 + 24 * np.arange(len(days))})
    if pending is not None:
        frame["smart_197_raw"] = pending
    return frame


def test_a_folder_of_daily_files_plain_and_gzipped_reads_as_the_single_gz(readings: pd.DataFrame,
                                                                          tmp_path: Path) -> None:
    raw = pd.read_csv(SLICE, dtype=str)
    for i, (day, rows) in enumerate(raw.groupby("date")):
        name = tmp_path / ("2013" if i % 2 else "") / f"{day}.csv{'.gz' if i % 2 else ''}"
        name.parent.mkdir(exist_ok=True)
        rows.to_csv(name, index=False)

    pd.testing.assert_frame_equal(read(tmp_path), readings)
    assert readings["serial_number"].nunique() == 48 and len(readings) == 1666


def test_an_attribute_the_file_lacks_is_missing_never_zero(readings: pd.DataFrame, tmp_path: Path) -> None:
    pd.read_csv(SLICE).drop(columns=["smart_197_raw"]).to_csv(tmp_path / "no-pending.csv", index=False)

    without = read(tmp_path / "no-pending.csv")

    assert without["smart_197_raw"].isna().all() and features(without)["smart_197_raw_grew_7d"].isna().all()
    assert (without["smart_5_raw"] == readings["smart_5_raw"]).all()
    assert readings["smart_187_raw"].isna().all()  # 2013 had no 187
    assert (readings["smart_197_raw"] == 0).any()  # while a count read as 0 stays 0


def test_more_sectors_or_faster_growth_never_lowers_p(shipped: DiskModel, readings: pd.DataFrame) -> None:
    rows = features(readings).sample(40, random_state=0)
    for name in COUNTS:
        swept = rows.loc[rows.index.repeat(len(COUNT_GRID))].assign(**{name: COUNT_GRID * len(rows)})
        p = predict(shipped.pipeline, swept).reshape(len(rows), len(COUNT_GRID))
        assert (np.diff(p, axis=1) >= -1e-12).all(), name

    jumps = [0, 5, 50, 500, 5_000]
    risks = {r.serial: r.p for r in shipped.predict(pd.concat(
        [drive(f"jump{jump}", [0] * 20 + [jump]) for jump in jumps]
        + [drive(f"pending{jump}", [0] * 21, [0] * 20 + [jump]) for jump in jumps]))}
    for kind in ("jump", "pending"):
        p = [risks[f"{kind}{jump}"] for jump in jumps]
        assert p == sorted(p) and p[-1] > 10 * p[0], kind


def test_no_drive_is_both_trained_on_and_scored_in_a_fold(readings: pd.DataFrame,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    trained_on, scored = [], []
    fit, score = disk_evaluate.fit, disk_evaluate.predict

    def spying_fit(table: pd.DataFrame, target: np.ndarray) -> Pipeline:
        trained_on.append(set(readings.loc[table.index, "serial_number"]))
        return fit(table, target)

    def spying_predict(pipeline: Pipeline, table: pd.DataFrame) -> np.ndarray:
        scored.append(set(readings.loc[table.index, "serial_number"]))
        return score(pipeline, table)

    monkeypatch.setattr(disk_evaluate, "fit", spying_fit)
    monkeypatch.setattr(disk_evaluate, "predict", spying_predict)
    failed = failed_on(readings)

    p = disk_evaluate.held_out(readings, features(readings), failed, disk_evaluate.folds(failed))

    assert len(scored) == 5 and not np.isnan(p).any()
    assert all(not (train_set & score_set) for train_set, score_set in zip(trained_on, scored, strict=True))
    every_scored = sorted(serial for fold in scored for serial in fold)
    assert every_scored == sorted(readings["serial_number"].unique())  # each drive once
    assert [list(f) for f in disk_evaluate.folds(failed)] == [list(f) for f in disk_evaluate.folds(failed)]


def _recompute(rows: list[dict[str, str]], column: str) -> list[str]:
    """From the CSV alone: failing drives warned 7+ days ahead, median days of warning, healthy drives flagged."""
    failing = [row for row in rows if row["failed_on"]]
    healthy = [row for row in rows if not row["failed_on"]]
    days = [(date.fromisoformat(row["failed_on"]) - date.fromisoformat(row[column])).days
            for row in failing if row[column]]
    flagged = sum(1 for row in healthy if row[column])
    median = f"{statistics.median(days):g}" if days else "-"
    return [f"{sum(d >= 7 for d in days)}/{len(failing)}", median, f"{flagged}/{len(healthy)}"]


def test_evaluate_prints_one_table_that_its_out_csv_recomputes(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "drives.csv"

    main(["evaluate", str(SLICE), "--out", str(out)])

    lines = capsys.readouterr().out.splitlines()
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:3] == ["serial_number", "first_warned", "failed_on"] and len(rows) == 48
    [alert] = [line for line in lines if "<- alert threshold" in line]
    assert set(_recompute(rows, "first_warned")) <= set(alert.split())
    rule_columns = [name for name in rows[0] if name.startswith("rule: ")]
    assert len(rule_columns) == 3
    for column in rule_columns:
        [line] = [line for line in lines if line.startswith(column)]
        assert set(_recompute(rows, column)) <= set(line[len(column):].split())
    assert sum(line.startswith("model P >= ") for line in lines) >= 3  # the curve, not one point


def test_the_shipped_model_loads_only_with_its_recorded_digest(tmp_path: Path) -> None:
    copy = tmp_path / SHIPPED.name
    shutil.copy(SHIPPED, copy)
    shutil.copy(record_path(SHIPPED), record_path(copy))
    record = json.loads(record_path(copy).read_text())

    assert load(copy).threshold == record["meta"]["threshold"]
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="refusing"):
        load(copy)


def test_the_shipped_model_beat_every_rule_on_held_out_drives(shipped: DiskModel) -> None:
    evaluation = shipped.meta["evaluation"]

    assert evaluation["model"]["flagged_share"] <= 0.02 and evaluation["threshold"] == shipped.threshold
    for name, rule in evaluation["rules"].items():
        assert evaluation["model_at_rule_rates"][name]["ahead"] >= rule["ahead"], name
    rules_at_2_percent = [rule["ahead"] for rule in evaluation["rules"].values() if rule["flagged_share"] <= 0.02]
    assert evaluation["model"]["ahead"] > max(rules_at_2_percent)


def test_the_shipped_model_warns_a_fast_growing_count_and_not_a_constant_small_one(shipped: DiskModel) -> None:
    grows = drive("GROWS", [0] * 25 + [40, 120, 260, 420, 650])
    steady = drive("STEADY", [3] * 30)

    risks = {risk.serial: risk for risk in shipped.predict(pd.concat([steady, grows]))}

    assert risks["GROWS"].alert and risks["GROWS"].p > 10 * risks["STEADY"].p
    assert risks["GROWS"].explanation.startswith("reallocated sectors 0 → 650 in 5 days")
    assert risks["GROWS"].date == date(2024, 3, 30)
    assert not risks["STEADY"].alert and risks["STEADY"].explanation == ""
    assert [risk.serial for risk in shipped.predict(pd.concat([steady, grows]))] == ["GROWS", "STEADY"]


def test_a_label_says_which_drives_failed_whatever_the_readings_say(readings: pd.DataFrame) -> None:
    failing = failed_on(readings).dropna().index[0]
    healthy = "9VS3JYRG"  # a drive with 3 reallocated sectors that did not fail

    pipeline, meta = train(readings, labels={failing: 0, healthy: 1})

    labelled = failed_on(readings, {failing: 0, healthy: 1})
    assert pd.isna(labelled[failing]) and labelled[healthy] == readings["date"].max()
    assert (meta["trained_on"]["drives"], meta["trained_on"]["failed"], meta["trained_on"]["labels"]) == (48, 8, 2)
    assert 0 < meta["threshold"] <= 1 and len(predict(pipeline, features(readings))) == len(readings)
    with pytest.raises(ValueError, match="1 \\(failed\\) or 0 \\(fine\\)"):
        failed_on(readings, {healthy: 2})


def test_every_help_text_is_a_sentence() -> None:
    top = parser()
    parsers = [top, *next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices.values()]
    texts = [p.description for p in parsers] + [a.help for p in parsers for a in p._actions]
    texts += [a.help for a in next(a for a in top._actions if a.dest == "command")._choices_actions]
    assert all(text[0].isupper() and text.endswith(".") for text in texts), texts
