"""Charts of a machine: the downsampling query on SQLite and Postgres, the PNG, and /status and /chart in a chat."""

from __future__ import annotations

import io
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import peewee as pw
import pytest
from matplotlib import image

from agent.wire import Sample
from bot import db
from bot.chat import charts
from bot.db import ChartPoint
from tests.fakes.bot_process import BotProcess
from tests.fakes.scenario import CHAT, WAIT_S, bot_env
from tests.fakes.telegram_api import FakeTelegram

T0 = 1764226800.0  # 2025-11-27 07:00:00 UTC, a multiple of 30 min
WEEK = 7 * 86400
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The stressed shading (#D55E00 at 15 % on white), as it comes out of the renderer.
SHADE_RGB = np.array([249, 231, 217]) / 255


def put(device: str, rows: list[tuple[float, float | None, dict[str, float]]]) -> None:
    """Store samples (ts, P(stressed), metrics) of one device, as the poller would."""
    db.store_batch([Sample(device, ts, metrics) for ts, _p, metrics in rows], [p for _ts, p, _m in rows], 1, [])


def answer(telegram: FakeTelegram, command: str, expected: str) -> str:
    """The bot's reply to `command`, which must contain `expected`; a notice the bot posts on its own (that no
    model could be loaded, say) is not taken for the reply."""
    mark = telegram.call_count()
    telegram.send_text(CHAT, command)
    return telegram.wait_for_message(CHAT, lambda text: expected in text, timeout=WAIT_S, after=mark)["text"]


def decoded(png: bytes) -> np.ndarray:
    """The picture as RGB(A) floats; fails unless it is a PNG that decodes."""
    assert png.startswith(PNG_SIGNATURE)
    return image.imread(io.BytesIO(png), format="png")


def shaded_pixels(picture: np.ndarray) -> int:
    return int(np.all(np.abs(picture[:, :, :3] - SHADE_RGB) < 3 / 255, axis=2).sum())


def test_a_week_of_samples_comes_back_as_at_most_600_bucket_means(database: pw.Database) -> None:
    rows = []
    for i in range(WEEK // 30):
        metrics = {"cpu_percent": float(i % 10) * 10, "disk_percent": 40 + 20 * i / (WEEK // 30)}
        if i % 2:
            metrics["mem_percent"] = 50.0 + i % 7
        rows.append((T0 + 30 * i, 0.9 if i == 5000 else 0.1, metrics))
    put("pc1", rows)
    put("pc2", [(T0 + 60, 0.99, {"cpu_percent": 100.0})])  # another machine stays out of pc1's chart

    series = db.chart_series("pc1", T0, T0 + WEEK, ["cpu_percent", "mem_percent", "swap_percent", "disk_percent"])

    assert 590 <= len(series.points) <= 600
    buckets: dict[int, list[tuple[float, float | None, dict[str, float]]]] = defaultdict(list)
    for row in rows:
        buckets[int(row[0] // series.bucket_s)].append(row)
    assert len(series.points) == len(buckets)
    for point, members in zip(series.points, (buckets[k] for k in sorted(buckets)), strict=True):
        assert (point.first_ts, point.last_ts) == (members[0][0], members[-1][0])
        for name in ("cpu_percent", "disk_percent", "mem_percent"):
            values = [m[name] for _ts, _p, m in members if name in m]
            assert point.metrics[name] == pytest.approx(sum(values) / len(values))
        assert "swap_percent" not in point.metrics, "a metric nobody sent is missing, not 0"
        assert point.p_stressed == max(p for _ts, p, _m in members)
    assert sum(point.p_stressed == 0.9 for point in series.points) == 1, "the highest P of a bucket is kept"


def test_a_bucket_averages_its_metrics_and_keeps_its_highest_probability(database: pw.Database) -> None:
    put("pc1", [
        (T0 - 1, 0.99, {"cpu_percent": 99.0}),  # before the window
        (T0, 0.2, {"cpu_percent": 10.0, "mem_percent": 40.0}),
        (T0 + 600, 0.8, {"cpu_percent": 20.0}),
        (T0 + 1200, 0.3, {"cpu_percent": 60.0}),
        (T0 + 1800, None, {"cpu_percent": 40.0}),
        (T0 + 2400, None, {"cpu_percent": 50.0}),
        (T0 + 3600, 0.1, {"cpu_percent": 5.0}),
        (T0 + 3601, 0.99, {"cpu_percent": 99.0}),  # after it
    ])

    series = db.chart_series("pc1", T0, T0 + 3600, ["cpu_percent", "mem_percent"], max_points=3)

    assert series.bucket_s == 1800
    assert series.points == [
        ChartPoint(T0, T0 + 1200, {"cpu_percent": 30.0, "mem_percent": 40.0}, 0.8),
        ChartPoint(T0 + 1800, T0 + 2400, {"cpu_percent": 45.0}, None),
        ChartPoint(T0 + 3600, T0 + 3600, {"cpu_percent": 5.0}, 0.1),
    ]


def test_a_machine_with_no_sample_in_the_window_has_an_empty_series(database: pw.Database) -> None:
    put("pc1", [(T0, 0.1, {"cpu_percent": 10.0})])

    assert db.chart_series("pc1", T0 + 60, T0 + 7200, ["cpu_percent"]).points == []
    assert db.chart_series("pc9", T0 - 60, T0 + 7200, ["cpu_percent"]).points == []


def point(ts: float, p: float | None) -> ChartPoint:
    return ChartPoint(ts, ts, {"cpu_percent": 50.0}, p)


def test_the_chart_is_a_small_png_that_shades_the_stressed_stretches(tmp_path: Path) -> None:
    db.open_database(f"sqlite:///{tmp_path}/rigwatch.sqlite3")
    end = T0 + 7200
    rows = [(T0 + 10 * i, 0.9 if 300 <= i < 360 else 0.1,
             {"cpu_percent": 50.0 + (40 if 300 <= i < 360 else 0), "mem_percent": 60.0, "swap_percent": 2.0,
              "disk_percent": 70.0}) for i in range(720)]
    put("pc1", rows)

    derived = charts.render_chart("pc1", T0, end, 0.7, [(T0 + 3000, T0 + 3600)])  # the incident
    given = charts.render_chart("pc1", T0, end, 0.7, [(T0 + 600, T0 + 1200), (T0 + 6000, T0 + 6600)])
    plain = charts.render_chart("pc1", T0, end, 0.7, [])
    empty = charts.render_chart("pc9", T0, end, 0.7, [])

    for png in (derived, given, plain, empty):
        assert len(png) < 150_000
        height, width = decoded(png).shape[:2]
        assert (width, height) == (800, 700)
    stretch = shaded_pixels(decoded(derived))
    assert stretch > 10_000, "the stressed ten minutes are shaded"
    assert shaded_pixels(decoded(plain)) < 100, "nothing shaded (a few edge pixels of the orange line match)"
    assert shaded_pixels(decoded(given)) > stretch, "two given spans of ten minutes shade more than one"


@pytest.mark.slow
def test_status_and_chart_of_a_machine_send_its_chart_as_a_photo(telegram: FakeTelegram, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    db.open_database(url)
    now = time.time()
    put("pc1", [(now - 8 * 3600 + 30 * i, 0.95 if 900 <= i < 920 else 0.1,
                 {"cpu_percent": 30.0 + i % 20, "mem_percent": 55.0, "disk_percent": 71.0}) for i in range(960)])
    put("old1", [(now - 3 * 86400, 0.1, {"cpu_percent": 5.0})])
    env = bot_env(telegram, tmp_path, url, SAMPLE_INTERVAL_SECONDS="3600")
    env.pop("KAFKA_SESSION_TIMEOUT_MS")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        mark = telegram.call_count()
        answer(telegram, "/status pc1", "<b>pc1</b>")
        status_chart = telegram.wait_for_photo(CHAT, timeout=WAIT_S, after=mark)
        mark = telegram.call_count()
        telegram.send_text(CHAT, "/chart pc1 6")
        six_hours = telegram.wait_for_photo(CHAT, timeout=WAIT_S, after=mark)

        answer(telegram, "/status old1", "<b>old1</b>")
        for wrong in ("/chart", "/chart pc1 0", "/chart pc1 721", "/chart pc1 six", "/chart pc1 6 7"):
            assert answer(telegram, wrong, "Usage: /chart").startswith("Usage: /chart <device> [hours]"), wrong
        answer(telegram, "/chart pc9 6", "I don't know a device called <b>pc9</b>")
        answer(telegram, "/chart old1", "<b>old1</b> sent nothing in the last 2 h")
        assert bot.stop() == 0
    assert not telegram.calls("sendPhoto")[2:], "no chart for a machine silent for the whole window"

    assert status_chart.params["caption"].startswith("<b>pc1</b>, ") and "UTC (2 h)" in status_chart.params["caption"]
    assert "UTC (6 h)" in six_hours.params["caption"]
    for call in (status_chart, six_hours):
        png = call.params["photo"]["data"]
        assert len(png) < 150_000
        picture = decoded(png)
        assert picture.shape[:2] == (700, 800)
        assert shaded_pixels(picture) > 0, "the stressed stretch half an hour ago is in both windows"
