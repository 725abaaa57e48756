"""What the bot says: alert, status, buttons and refusals, as pure functions of the data."""

from __future__ import annotations

import json
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot.chat import alerts, callbacks, common, forecasts, formatting, status, teams
from bot.db import Incident
from bot.intake.sources import Unassigned
from bot.pipeline.baselines import Usual
from bot.pipeline.forecast import Forecast
from schema.domain import IncidentDetail, Reply, Window
from tests.fakes.samples import TS, stored

LIMIT = 4096
TAG_RE = re.compile(r"<(/?)([a-z]+)[^>]*>")
ENTITY_RE = re.compile(r"&(amp|lt|gt|quot|#\d+|#x[0-9a-fA-F]+);")


def assert_valid_telegram_html(text: str) -> None:
    """Telegram refuses a message whose tags are not closed or whose entities are cut."""
    open_tags: list[str] = []
    for closing, tag in TAG_RE.findall(text):
        if closing:
            assert open_tags and open_tags[-1] == tag, f"</{tag}> without its <{tag}>"
            open_tags.pop()
        else:
            open_tags.append(tag)
    assert open_tags == [], f"unclosed tags {open_tags}"
    without_tags = TAG_RE.sub("", text)
    assert "<" not in without_tags and ">" not in without_tags, "a raw < or > outside a tag"
    assert "&" not in ENTITY_RE.sub("", without_tags), "a raw & or a cut entity"


def incident(kind: str = "stressed", state: str = "open", device: str = "pc1", **fields: object) -> Incident:
    """An incident as the store would hold it, without a database."""
    detail = fields.pop("detail", {"drivers": ["disk_percent", "mem_percent"]})
    detail = {**detail, "metrics": fields.pop("metrics", {})}
    values = {"id": 42, "device": device, "kind": kind, "state": state, "opened_ts": TS, "last_ts": TS + 23 * 60,
              "last_p": 0.934, "peak_p": 0.97, "detail": IncidentDetail.from_json(json.dumps(detail)), "created": TS,
              "updated": TS,
              "revision": 3, "sample": 7}
    if state != "open":
        values["resolved_ts"] = TS + 23 * 60
    return Incident(**{**values, **fields})


def buttons(markup: object) -> list[tuple[str, str]]:
    return [(b.text, b.callback_data) for row in markup.inline_keyboard for b in row] if markup else []


def line_of(text: str, needle: str) -> str:
    [line] = [line for line in text.splitlines() if needle in line]
    return line


def test_html_in_names_is_escaped() -> None:
    sample = stored(device="<b>pc&1</b>", cpu_percent=99, **{"<script>x</script>": 5, "a&b": 1})

    for text in (
        alerts.alert(incident(device="<b>pc&1</b>", acked_by="<u>mallory</u>", acked_at=TS,
                              metrics={"cpu_percent": 99}), {}, TS),
        status.device_status(sample, 0.7, 3, now=TS + 10),
        status.overview([sample], 0.7, now=TS + 10),
        status.unknown_device("<i>x", ["<b>pc&1</b>"]),
    ):
        assert "<script>" not in text
        assert "<b>pc&1" not in text
        assert "<u>mallory" not in text
        assert_valid_telegram_html(text)
    said = status.device_status(sample, 0.7, 3, now=TS + 10)
    assert "&lt;script&gt;x&lt;/script&gt;" in said
    assert "a&amp;b" in said


def test_lone_surrogates_in_names_become_question_marks_so_the_reply_can_be_sent() -> None:
    sample = stored(device="pc\udc80", cpu_percent=99, **{"fan\ud800": 5})

    for text in (
        alerts.alert(incident(device="pc\udc80", acked_by="mallory\udfff", acked_at=TS,
                              metrics={"cpu_percent": 99}), {}, TS),
        status.device_status(sample, 0.7, 3, now=TS + 10),
        status.overview([sample], 0.7, now=TS + 10),
    ):
        assert text.encode("utf-8")
        assert "pc?" in text
    assert "fan?" in status.device_status(sample, 0.7, 3, now=TS + 10)


def test_long_texts_are_clipped_to_telegram_limit() -> None:
    fleet = [stored(device=f"rack{i:03d}-" + "x" * 50, ts=TS - i) for i in range(200)]
    odd_metrics = {f"{i:02d}" + "&" * 60: float(i) for i in range(64)}

    for text in (
        status.overview(fleet, 0.7, now=TS),
        status.device_status(stored(**odd_metrics), 0.7, 3, now=TS),
        alerts.alert(incident(device="x" * 5000, metrics={"cpu_percent": 99}), {}, TS),
    ):
        assert len(text) <= LIMIT


def test_a_clipped_fleet_overview_is_still_valid_html() -> None:
    # 150 machines is a plausible fleet; a clipped <pre> without its end tag makes Telegram refuse /status.
    fleet = [stored(device=f"server-{i:03d}", ts=TS - 10) for i in range(150)]

    text = status.overview(fleet, 0.7, now=TS)

    assert len(text) <= LIMIT
    assert_valid_telegram_html(text)


def test_a_clipped_device_status_is_still_valid_html() -> None:
    sample = stored(**{f"{i:02d}" + "&" * 60: float(i) for i in range(64)})

    text = status.device_status(sample, 0.7, 3, now=TS)

    assert len(text) <= LIMIT
    assert_valid_telegram_html(text)


def test_the_overview_lists_every_device_with_its_state() -> None:
    fleet = [
        stored(device="alpha", ts=TS - 10, p=0.93),
        stored(device="bravo", ts=TS - 240, p=0.12),
        stored(device="charlie", ts=TS - 301, p=0.95),
        stored(device="delta", ts=TS - 3 * 86400, p=0.10),
    ]

    text = status.overview(fleet, 0.7, now=TS, silent={"charlie", "delta"})

    assert "4 machines" in text
    assert "stressed" in line_of(text, "alpha")
    assert "93%" in line_of(text, "alpha")
    assert "normal" in line_of(text, "bravo"), "a machine that reports every 5 minutes is not silent"
    assert "silent" in line_of(text, "charlie"), "silent, whatever the last prediction"
    assert "silent" in line_of(text, "delta")
    assert "3 d ago" in line_of(text, "delta")


def test_the_overview_of_an_empty_fleet_says_so() -> None:
    assert "No machine" in status.overview([], 0.7, now=TS)


def test_device_status_is_a_table_with_metric_labels_and_the_model_versions() -> None:
    sample = stored(p=0.12, version=3, cpu_percent=37.5, mem_percent=61.2, cpu_temp_c=58, gpu_percent=80)

    text = status.device_status(sample, 0.7, 4, now=TS + 30)

    assert text.splitlines()[0].startswith("<b>pc1</b>")
    assert "normal" in text.splitlines()[0]
    assert "2025-11-27 07:00:00 UTC" in text
    assert "12%" in text
    assert "v3" in text and "active model v4" in text
    table = text[text.index("<pre>") + 5:text.index("</pre>")].splitlines()
    assert [row.split()[0] for row in table] == ["CPU", "Memory", "CPU", "gpu_percent"]
    assert "61.2 %" in line_of(text, "Memory")
    assert "58 °C" in line_of(text, "temperature")


def test_device_status_shows_uptime_as_a_duration_people_read() -> None:
    text = status.device_status(stored(cpu_percent=5, uptime_s=54625), 0.7, 3, now=TS)

    assert re.search(r"^Uptime +15 h 10 min(</pre>)?$", text, re.M), text


def test_device_status_without_a_model_says_none() -> None:
    text = status.device_status(stored(p=None, version=None, cpu_percent=5), 0.7, None, now=TS)

    assert "n/a" in text
    assert "active model none" in text


def test_unknown_device_lists_the_known_ones() -> None:
    text = status.unknown_device("pc9", ["alpha", "bravo"])

    assert "pc9" in text
    assert "alpha" in text and "bravo" in text
    assert "none yet" in status.unknown_device("pc9", [])


def test_a_refusal_tells_the_chat_its_id_and_the_variable_to_set() -> None:
    text = common.refusal(-1001234567890)

    assert "-1001234567890" in text
    assert "ALLOWED_CHAT_IDS" in text


def test_device_status_shows_the_usual_range_next_to_each_model_metric() -> None:
    sample = stored(disk_percent=91.3, load_1m=0.4, cpu_temp_c=58, process_count=310)
    usual = {"disk_percent": Usual(40, 55), "load_1m": Usual(0.12, 0.8)}

    text = status.device_status(sample, 0.7, 3, now=TS + 30, usual=usual)

    assert "usually 40–55 %" in line_of(text, "Disk")
    assert "usually 0.12–0.8" in line_of(text, "Load")
    assert "no usual range yet" in line_of(text, "temperature")
    assert "usual" not in line_of(text, "Processes"), "the model does not use it: no range"
    assert_valid_telegram_html(text)


def forecast(metric: str = "disk_percent", level: float = 91.2, slope: float = 2.1, eta_h: float | None = 2.8,
             device: str = "pc1") -> Forecast:
    return Forecast(device, metric, 7, TS, level, slope, None if eta_h is None else eta_h * 3600)


def test_a_forecast_alert_says_which_machine_what_fills_when_how_full_and_how_fast() -> None:
    text = forecasts.forecast_alert(forecast(), Usual(40, 55))

    first = text.splitlines()[0]
    assert "<b>pc1</b>: disk will be full in about 3 h (now 91 %, +2.1 %/h)" in first
    assert "usually 40–55 %" in text and "97 %" in text
    assert "2025-11-27 07:00:00 UTC" in text
    assert_valid_telegram_html(text)


@pytest.mark.parametrize(("eta_h", "said"), [(0.5, "in about 30 min"), (0.02, "within minutes"), (0, "at its edge now"),
                                             (3.4, "in about 3 h")])
def test_a_forecast_says_how_soon_as_people_do(eta_h: float, said: str) -> None:
    assert said in forecasts.forecast_alert(forecast(metric="mem_percent", eta_h=eta_h), None)
    assert "memory" in forecasts.forecast_alert(forecast(metric="mem_percent", eta_h=eta_h), None)


def test_device_status_shows_the_forecasts_within_the_horizon_or_that_there_is_no_trend() -> None:
    sample = stored(disk_percent=91.3, mem_percent=60, swap_percent=2)
    near = {"disk_percent": forecast(), "mem_percent": forecast("mem_percent", 60, 0.1, 300), "swap_percent": None}

    text = status.device_status(sample, 0.7, 3, now=TS, forecasts=near, horizon_s=4 * 3600)
    assert "disk will be full in about 3 h" in text
    assert "memory" not in text.lower().split("forecast")[-1], "300 h away is no forecast within 4 h"

    flat = {"disk_percent": forecast(slope=0.0, eta_h=None), "mem_percent": None}
    assert "no trend toward an edge within 4 h" in status.device_status(sample, 0.7, 3, now=TS, forecasts=flat)
    none_yet = status.device_status(sample, 0.7, 3, now=TS, forecasts={"disk_percent": None})
    assert "Forecast: none yet, a trend needs 40 min of samples" in none_yet


def test_an_incident_names_the_device_first_then_p_how_long_and_each_driver_with_its_usual_range() -> None:
    metrics = {"disk_percent": 99.4, "mem_percent": 71, "cpu_percent": 20}
    usual = {"disk_percent": Usual(40.2, 55.4), "cpu_percent": Usual(5, 30)}

    text = alerts.alert(incident(metrics=metrics), usual, TS + 23 * 60)

    first, second, *rest = text.splitlines()
    assert first == "🔴 <b>pc1</b> is stressed: P(stressed) 93%"
    assert "2025-11-27 07:00:00 UTC (23 min), peak 97%" in second
    assert rest == ["• Disk (root) 99.4 % (usually 40–55 % on pc1)", "• Memory 71 % (no usual range yet)"]
    assert_valid_telegram_html(text)


def test_an_incident_says_how_it_ended_and_who_acted() -> None:
    recovered = alerts.alert(incident(state="resolved", metrics={"disk_percent": 60}), {}, TS + 3600)
    false_alarm = alerts.alert(incident(state="false alarm", acked_by="@bob", acked_at=TS + 60), {}, TS + 3600)
    acked = alerts.alert(incident(acked_by="@alice", acked_at=TS + 60), {}, TS + 3600)

    assert recovered.startswith("✅ <b>pc1</b> recovered after 23 min") and "07:00–07:23 UTC" in recovered
    assert false_alarm.startswith("❌ <b>pc1</b>: a false alarm") and "Labelled a false alarm by @bob" in false_alarm
    assert "Acknowledged by @alice" in acked


def test_a_short_incident_says_its_span_and_length_to_the_second() -> None:
    short = alerts.alert(incident(state="resolved", metrics={"disk_percent": 99.2}, last_ts=TS + 37,
                                  resolved_ts=TS + 37), {}, TS + 60)
    reply = alerts.reply(Reply.RECOVERED, incident(state="resolved", resolved_ts=TS + 115), TS + 120)
    across_a_minute = alerts.alert(incident(state="resolved", opened_ts=TS + 40, resolved_ts=TS + 90), {}, TS + 99)

    assert short.splitlines()[:2] == ["✅ <b>pc1</b> recovered after 37 s",
                                      "Was stressed 07:00:00–07:00:37 UTC, peak 97%"]
    assert reply == "✅ pc1 recovered after 1 min 55 s"
    assert "Was stressed 07:00:40–07:01:30 UTC" in across_a_minute, "not 07:00–07:01"


def test_a_silence_says_when_the_machine_stopped_and_when_it_came_back() -> None:
    silent = alerts.alert(incident(kind="silent", detail={}), {}, TS + 240)
    back = alerts.alert(incident(kind="silent", state="resolved", detail={}, resolved_ts=TS + 720), {}, TS + 800)

    assert silent == "⚪ <b>pc1</b> stopped reporting at 2025-11-27 07:00:00 UTC (last seen 4 min ago)"
    assert back.startswith("✅ <b>pc1</b> is reporting again after 12 min of silence")


def test_a_forecast_incident_reads_like_the_forecast() -> None:
    detail = {"metric": "disk_percent", "ts": TS, "level": 91.2, "slope_per_h": 2.1, "eta_s": 2.8 * 3600}

    text = alerts.alert(incident(kind="forecast", detail=detail), {"disk_percent": Usual(40, 55)}, TS)

    assert "<b>pc1</b>: disk will be full in about 3 h (now 91 %, +2.1 %/h)" in text.splitlines()[0]
    assert_valid_telegram_html(text)


def test_the_buttons_follow_the_incident() -> None:
    assert buttons(alerts.keyboard(incident())) == [
        ("✅ Correct", "i:42:ok"), ("❌ Wrong prediction", "i:42:no"), ("👀 On it", "i:42:on"),
        ("📈 Chart", "i:42:chart"), ("🔕 1 h", "i:42:s1"), ("🔕 8 h", "i:42:s8")]
    assert [text for text, _ in buttons(alerts.keyboard(incident(acked_by="@alice")))] == [
        "📈 Chart", "🔕 1 h", "🔕 8 h"]
    taken = incident(detail={"taken_by": "@bob", "taken_at": TS})
    assert [text for text, _ in buttons(alerts.keyboard(taken))] == [
        "✅ Correct", "❌ Wrong prediction", "📈 Chart", "🔕 1 h", "🔕 8 h"], "taken, it can still be labelled"
    assert buttons(alerts.keyboard(incident(state="resolved"))) == [("📈 Chart", "i:42:chart"),
                                                                   ("📄 Report", "i:42:report")]
    assert [t for t, _ in buttons(alerts.keyboard(incident(kind="forecast")))][:2] == [
        "✅ Right forecast", "❌ Wrong forecast"]
    assert [t for t, _ in buttons(alerts.keyboard(incident(kind="silent")))] == ["👀 On it", "🔕 1 h", "🔕 8 h"]
    assert buttons(alerts.keyboard(incident(kind="silent", state="resolved"))) == [("📄 Report", "i:42:report")]
    for _, data in buttons(alerts.keyboard(incident(id=10**18 - 1))):
        assert len(data.encode()) <= 64 and callbacks.parse_incident(data)[0] == 10**18 - 1


@pytest.mark.parametrize(
    "data", ["i:1:yes", "i:x:ok", "i:1:ok:x", "i:1", "", None, f"i:{'9' * 100}:ok", "label:1:1", " i:1:ok",
             "i:1:ok\n", "i:-1:ok"],
)
def test_parse_incident_callback_rejects_anything_else(data: str | None) -> None:
    assert callbacks.parse_incident(data) is None


@pytest.mark.parametrize(("args", "parsed"), [
    (["pc1"], ("pc1", 3600.0, None, "no reason given")),
    (["pc1", "2h", "kernel", "upgrade"], ("pc1", 7200.0, None, "kernel upgrade")),
    (["web*", "30m"], ("web*", 1800.0, None, "no reason given")),
    (["pc1", "3d", "moving", "racks"], ("pc1", 3 * 86400.0, None, "moving racks")),
    (["pc1", "disk", "swap"], ("pc1", 3600.0, None, "disk swap")),
    (["db1", "daily", "02:00-03:00", "backups"], ("db1", None, Window(0b1111111, 120, 180), "backups")),
    (["db*", "sun", "01:00-05:00"], ("db*", None, Window(0b1000000, 60, 300), "no reason given")),
    (["db?", "mon-fri", "22:00-06:30"], ("db?", None, Window(0b0011111, 22 * 60, 390), "no reason given")),
    (["db1", "sat,sun", "00:00-24:00"], ("db1", None, Window(0b1100000, 0, 24 * 60), "no reason given")),
])
def test_mute_reads_a_pattern_a_duration_or_a_window_and_a_reason(args: list[str], parsed: tuple) -> None:
    request = teams.parse_mute(args)
    assert (request.pattern, request.seconds, request.window, request.reason) == parsed


@pytest.mark.parametrize(("args", "why"), [
    ([], ""), (["pc 1"], ""), (["pc1", "2 hours"], ""), (["pc1", "31d"], ""), (["pc1", "0h"], ""),
    (["pc1", "1.5h"], ""), (["pc1", "daily"], ""), (["pc1", "daily", "25:00-26:00"], "is not a time range"),
    (["pc1", "someday", "02:00-03:00"], "is not a day"), (["pc1", "daily", "02:00-02:00"], "the window is empty"),
    (["<b>", "1h"], ""), (["x" * 65], ""),
])
def test_mute_answers_what_it_cannot_read_with_the_usage_line_and_why(args: list[str], why: str) -> None:
    answer = teams.parse_mute(args)
    assert isinstance(answer, str) and why in answer and "e.g. /mute db1 daily 02:00-03:00" in answer


def test_a_window_holds_on_its_days_across_midnight_in_its_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    window = Window.parse("sun", "23:00-01:00")
    sunday_2330 = datetime(2026, 12, 6, 23, 30, tzinfo=berlin).timestamp()
    assert window.holds(sunday_2330, berlin) and window.holds(sunday_2330 + 3600, berlin)  # Monday 00:30
    assert not window.holds(sunday_2330 + 2 * 3600, berlin)  # Monday 01:30
    assert not window.holds(sunday_2330 - 86400, berlin)  # Saturday 23:30
    assert not window.holds(sunday_2330, ZoneInfo("UTC")), "22:30 in UTC"
    assert window.describe() == "sun 23:00-01:00"
    assert window.next_start(sunday_2330 + 3600, berlin) == sunday_2330 - 30 * 60 + 7 * 86400


FILESYSTEMS = {"/": 41.2, "/data": 99.4}
TOP = {"cpu": [("java", 4121, 161.0), ("make", 9, 40.0)],
       "memory": [("java", 4121, 61.0), ("postgres", 88, 12.0), ("<b>x&y", 5, 0.4)]}


def test_an_alert_names_the_full_disk_by_its_mount_point_and_the_processes_behind_memory() -> None:
    detail = {"drivers": ["disk_percent", "mem_percent"], "filesystems": FILESYSTEMS, "processes": TOP}
    usual = {"disk_percent": Usual(40, 55), "mem_percent": Usual(45, 52)}

    text = alerts.alert(incident(detail=detail, metrics={"disk_percent": 99.4, "mem_percent": 98.5}), usual,
                        TS + 23 * 60)

    assert text.splitlines()[2:] == [
        "• Disk /data 99.4 % (usually 40–55 % on pc1)",
        "• Memory 98.5 % (usually 45–52 % on pc1) · top: java 61 % (pid 4121), postgres 12 %, &lt;b&gt;x&amp;y 0.4 %",
    ]
    assert_valid_telegram_html(text)


def test_a_recovered_alert_shows_the_mount_point_and_processes_at_its_worst_and_cpu_drivers_show_cpu_use() -> None:
    detail = {"drivers": ["cpu_percent", "swap_percent", "disk_percent"], "peak": {"cpu_percent": 99.0,
              "swap_percent": 91.0, "disk_percent": 97.0}, "peak_filesystems": {"/": 97.0, "/data": 12.0},
              "peak_processes": TOP, "processes": {}}

    text = alerts.alert(incident(state="resolved", detail=detail), {}, TS + 3600)

    assert text.splitlines()[2:] == [
        "• CPU 99 % (no usual range yet) at its worst · top: java 161 % (pid 4121), make 40 %",
        "• Swap 91 % (no usual range yet) at its worst · top memory: java 61 % (pid 4121), postgres 12 %, "
        "&lt;b&gt;x&amp;y 0.4 %",
        "• Disk / 97 % (no usual range yet) at its worst",
    ]


def test_an_incident_stored_before_filesystems_and_processes_reads_as_it_did() -> None:
    old = '{"drivers": ["disk_percent"], "metrics": {"disk_percent": 99.4}, "peak": {"disk_percent": 99.4}}'
    detail = IncidentDetail.from_json(old)

    assert (detail.filesystems, detail.processes, detail.peak_processes) == ({}, {}, {})
    assert detail.to_json() == old, "a machine without them stores the same JSON as before"
    text = alerts.alert(incident(detail=json.loads(old), metrics={"disk_percent": 99.4}), {}, TS)
    assert "• Disk (root) 99.4 %" in text


def test_device_status_has_a_row_per_filesystem_and_the_top_processes() -> None:
    deep = "/var/lib/postgresql/16/main/pg_wal/archive"
    sample = stored(disk_percent=99.4, mem_percent=98.5)
    sample.filesystems, sample.processes = {**FILESYSTEMS, deep: 7.0}, TOP
    usual = {"disk_percent": Usual(40, 55)}

    text = status.device_status(sample, 0.7, 3, now=TS + 30, usual=usual)

    assert re.fullmatch(r"Disk / +41\.2 %", line_of(text, "Disk / "))
    assert "99.4 %" in line_of(text, "Disk /data") and "usually 40–55 %" in line_of(text, "Disk /data")
    assert "7 %" in line_of(text, "pg_wal/archive") and "Disk /…" in line_of(text, "pg_wal/archive")
    assert "Top CPU: java 161 % (pid 4121), make 40 %" in text
    assert "Top memory: java 61 % (pid 4121), postgres 12 %, &lt;b&gt;x&amp;y 0.4 %" in text
    assert_valid_telegram_html(text)
    without = status.device_status(stored(disk_percent=40.0), 0.7, 3, now=TS + 30)
    assert "Disk (root)" in without and "Top" not in without, "a machine without them shows none"


def test_a_filesystem_forecast_names_its_mount_point() -> None:
    fill = forecast(metric="disk:/data")

    alert = forecasts.forecast_alert(fill, None)
    device = status.device_status(stored(disk_percent=91.2), 0.7, 3, now=TS,
                                  forecasts={"disk:/": None, "disk:/data": fill}, horizon_s=4 * 3600)

    assert "<b>pc1</b>: /data will be full in about 3 h (now 91 %, +2.1 %/h)" in alert.splitlines()[0]
    assert "Disk /data on pc1: it needs an intervention from 97 %" in alert
    assert "• /data will be full in about 3 h" in device
    assert_valid_telegram_html(alert)


def test_a_chart_says_it_draws_the_fullest_disk() -> None:
    assert status.chart_disk(FILESYSTEMS) == "Disk (fullest)" and status.chart_disk(None) == "Disk"
    assert "the fullest disk (now /data)" in status.chart_caption("pc1", TS, TS + 7200, formatting.fullest(FILESYSTEMS))


def test_status_says_why_this_bot_reads_no_partition_of_its_topic() -> None:
    missing = Unassigned("rig<watch>", "bots", since=1000.0, partitions=None, may_create=False)
    crowded = Unassigned("metrics", "rigwatch-bot", since=1000.0, partitions=1, may_create=True)

    assert status.unassigned_notice(missing, now=1180.0) == (
        "⚠️ Kafka topic <code>rig&lt;watch&gt;</code> does not exist (for 3 min): no metrics arrive through it until "
        "it is created, and I read it within seconds of that.")
    assert status.unassigned_notice(crowded, now=1065.0) == (
        "⚠️ For 1 min I have read no partition of Kafka topic <code>metrics</code> (1 partition): its consumer group "
        "<code>rigwatch-bot</code> has not settled, or more bot processes share the group than the topic has "
        "partitions.")
