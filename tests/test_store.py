"""The store against a real SQLite file and a real PostgreSQL server: every test runs on both."""

from __future__ import annotations

import gzip
import hashlib
import math
import threading
from pathlib import Path

import peewee as pw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.vocabulary import KNOWN_METRICS
from agent.wire import Sample, WireError, parse
from bot import db
from bot.db import Rejection
from ml.data import latest_labels, training_frame
from schema.tables import add_missing_columns
from tests.fakes.samples import TS, sample, with_devices
from tests.test_wire import VALUES


def stored_rows() -> int:
    return db.Metric.select().count()


def test_open_database_creates_the_sqlite_folder_and_file(tmp_path: Path) -> None:
    folder = tmp_path / "sub" / "dir"

    db.open_database(f"sqlite:///{folder}/rigwatch.sqlite3").close()

    assert (folder / "rigwatch.sqlite3").is_file()


def test_sqlite_commits_leave_the_checkpoint_to_the_background_and_it_copies_the_whole_log(tmp_path: Path) -> None:
    path = tmp_path / "rigwatch.sqlite3"
    db.open_database(f"sqlite:///{path}")
    assert db.checkpoint_in_background()
    for batch in range(20):  # about 1,500 pages of log: past SQLite's own checkpoint at 1,000
        samples = [sample(f"pc{i}", TS + 5 * batch, cpu_percent=i % 100, mem_percent=50) for i in range(1000)]
        db.store_batch(samples, [0.1] * len(samples), 1, [])
    wal = path.with_name(path.name + "-wal")
    assert path.stat().st_size < 200_000 < 4_000_000 < wal.stat().st_size, "a commit checkpointed"

    job = threading.Thread(target=db.checkpoint)  # as the bot's job does, from another thread
    job.start()
    job.join()

    assert path.stat().st_size > 1_000_000  # the database file itself now holds the rows


def test_it_returns_new_samples_and_ignores_a_redelivered_batch(database: pw.Database) -> None:
    pc1, pc2 = sample("pc1", cpu_percent=37.5, mem_percent=50), sample("pc2", cpu_percent=20, mem_percent=61.2)
    first = db.store_batch([pc1, pc2], [0.2, 0.9], 3, [])

    assert [(s.device, s.ts, s.p_stressed, s.model_version) for s in first] == [
        ("pc1", TS, 0.2, 3), ("pc2", TS, 0.9, 3)
    ]
    assert len({s.id for s in first}) == 2

    # Kafka redelivers the same messages after a crash, scored this time by another model version.
    again = db.store_batch(
        [pc1, pc2, sample("pc1", TS + 5, cpu_percent=40, mem_percent=50)],
        [0.99, 0.01, 0.5], 4, [],
    )

    assert [(s.device, s.ts) for s in again] == [("pc1", TS + 5)]
    assert stored_rows() == 3
    kept = db.latest_sample("pc2")
    assert kept is not None
    assert (kept.id, kept.p_stressed, kept.model_version) == (first[1].id, 0.9, 3)
    assert kept.metrics == {"cpu_percent": 20.0, "mem_percent": 61.2}


def test_a_batch_redelivered_whole_returns_nothing_and_stores_nothing(database: pw.Database) -> None:
    batch = [sample("pc1", TS + i, cpu_percent=i) for i in range(10)]
    db.store_batch(batch, [0.1] * 10, 1, [])

    assert db.store_batch(batch, [0.8] * 10, 2, []) == []
    assert stored_rows() == 10
    assert {row.p_stressed for row in db.Metric.select()} == {0.1}


def test_a_duplicate_within_one_batch_is_stored_once(database: pw.Database) -> None:
    new = db.store_batch([sample("pc1", cpu_percent=50), sample("pc1", cpu_percent=50)], [0.3, 0.3], 1, [])

    assert len(new) == 1
    assert stored_rows() == 1


def test_the_sample_returned_for_an_in_batch_duplicate_is_the_one_stored(database: pw.Database) -> None:
    # The returned sample drives the alert; /status reads the stored row. Both must tell the same story.
    new = db.store_batch([sample("pc1", cpu_percent=10), sample("pc1", cpu_percent=99)], [0.05, 0.95], 1, [])

    latest = db.latest_sample("pc1")
    assert latest is not None
    assert [(s.id, s.metrics, s.p_stressed) for s in new] == [(latest.id, latest.metrics, latest.p_stressed)]


def test_a_missing_metric_is_stored_as_null_and_comes_back_absent(database: pw.Database) -> None:
    db.store_batch([sample("pi", cpu_percent=12)], [None], None, [])

    row = db.Metric.get(db.Metric.device == "pi")
    assert row.mem_percent is None
    assert row.cpu_temp_c is None
    latest = db.latest_sample("pi")
    assert latest is not None
    assert latest.metrics == {"cpu_percent": 12.0}
    assert (latest.p_stressed, latest.model_version) == (None, None)


@pytest.mark.parametrize("order", ["small sample first", "full sample first"])
def test_samples_with_different_metrics_in_one_batch_each_keep_their_own(database: pw.Database, order: str) -> None:
    # A Raspberry Pi without a temperature sensor and a PC with one report in the same poll.
    pi = sample("pi", cpu_percent=20)
    pc = sample("pc", cpu_percent=30, mem_percent=61.2, cpu_temp_c=58)
    batch = [pi, pc] if order == "small sample first" else [pc, pi]
    db.store_batch(batch, [0.1, 0.2], 1, [], on_stored=with_devices)

    assert {device: db.latest_sample(device).metrics for device in ("pc", "pi")} == {
        "pc": {"cpu_percent": 30.0, "mem_percent": 61.2, "cpu_temp_c": 58.0},
        "pi": {"cpu_percent": 20.0},
    }


def test_any_device_name_and_value_is_stored_as_given(database: pw.Database) -> None:
    # Past the wire format's checks: names that JSON escapes or that look like its syntax, numbers at the
    # ends of a float, a missing prediction. Postgres gets a batch as JSON lines when it can, as CSV
    # otherwise: each name alone, then the plain ones in one batch.
    odd = ["a],[b", 'q"uote', "back\\slash", "line\nbreak"]
    plain = ["null", "", "pé", "comma,s", "pc1"]
    batches = [[(name, TS)] for name in odd + plain] + [[(name, TS + 5) for name in plain]]
    for batch in batches:
        samples = [sample(name, ts, cpu_percent=1e-7, uptime_s=1.5e14, mem_percent=0) for name, ts in batch]
        new = db.store_batch(samples, [None, *[0.5] * (len(batch) - 1)], 4, [])
        assert [(s.device, s.ts) for s in new] == batch

    rows = {(row.device, row.ts): row for row in db.Metric.select()}
    assert len(rows) == len(odd + plain) + len(plain)
    for batch in batches:
        for i, key in enumerate(batch):
            row = rows[key]
            assert (row.cpu_percent, row.uptime_s, row.mem_percent, row.swap_percent) == (1e-7, 1.5e14, 0.0, None)
            assert (row.p_stressed, row.model_version) == ((None, None) if i == 0 else (0.5, 4))


def test_unknown_metric_names_are_kept(database: pw.Database) -> None:
    new = db.store_batch([sample("gpu1", cpu_percent=5, gpu_percent=80.5, fan_rpm=1200)], [0.1], 1, [])

    assert new[0].metrics == {"cpu_percent": 5.0, "gpu_percent": 80.5, "fan_rpm": 1200.0}
    latest = db.latest_sample("gpu1")
    assert latest is not None
    assert latest.metrics == {"cpu_percent": 5.0, "gpu_percent": 80.5, "fan_rpm": 1200.0}


FILESYSTEMS = {"/": 41.2, "/data": 99.4, '/mnt/"odd", name\\ü': 3.0}
PROCESSES = {"cpu": [("java", 4121, 161.5), ("post,gres", 88, 12.0)], "memory": [('say "hi"', 7, 61.0)]}


@pytest.mark.parametrize("order", ["with them first", "without them first"])
def test_filesystems_and_top_processes_are_stored_beside_samples_without_them(database: pw.Database,
                                                                              order: str) -> None:
    server = Sample("db1", TS, {"disk_percent": 99.4, "mem_percent": 98.5}, filesystems=FILESYSTEMS,
                    processes=PROCESSES)
    pi = sample("pi", cpu_percent=20)
    only_processes = Sample("pc2", TS, {"cpu_percent": 90.0}, processes={"cpu": [("make", 1, 90.0)]})
    batch = [server, pi, only_processes] if order == "with them first" else [pi, only_processes, server]

    new = {s.device: s for s in db.store_batch(batch, [0.9, 0.1, 0.2], 1, [], on_stored=with_devices)}
    again = {device: db.latest_sample(device) for device in new}

    for shown in (new, again):
        assert (shown["db1"].filesystems, shown["db1"].processes) == (FILESYSTEMS, PROCESSES)
        assert (shown["pi"].filesystems, shown["pi"].processes) == (None, None)
        assert (shown["pc2"].filesystems, shown["pc2"].processes) == (None, {"cpu": [("make", 1, 90.0)]})
    assert db.latest_sample("db1").metrics == {"disk_percent": 99.4, "mem_percent": 98.5}
    assert db.Metric.get(db.Metric.device == "pi").filesystems is None


def test_a_database_of_an_older_version_gains_the_columns_and_keeps_its_samples(database: pw.Database) -> None:
    db.store_batch([sample("old", cpu_percent=5)], [0.1], 1, [])
    for column in ("filesystems", "processes"):
        database.execute_sql(f"ALTER TABLE metric DROP COLUMN {column}")

    add_missing_columns(database)  # what open_database does when the bot starts on it
    db.store_batch([Sample("new", TS, {"disk_percent": 99.4}, filesystems={"/data": 99.4})], [0.9], 1, [])

    assert db.latest_sample("old").metrics == {"cpu_percent": 5.0}
    assert db.latest_sample("old").filesystems is None
    assert db.latest_sample("new").filesystems == {"/data": 99.4}


def test_rejects_are_kept_with_reason_size_and_the_start_of_the_payload(database: pw.Database) -> None:
    huge = b'{"v": 1, "device": "' + b"x" * 1_000_000 + b'"}'
    db.store_batch([], [], None, [Rejection("rigwatch.metrics/0@17", "message is too big", huge)])

    [row] = db.rejected()
    assert row.reason == "message is too big"
    assert row.source == "rigwatch.metrics/0@17"
    assert row.size == len(huge)
    assert 0 < len(row.payload) <= 512
    assert row.payload.startswith('{"v": 1, "device": "xxx')


def test_an_empty_reject_is_kept_with_size_zero(database: pw.Database) -> None:
    db.store_batch([], [], None, [Rejection("rigwatch.metrics/0@1", "empty message", None)])

    [row] = db.rejected()
    assert (row.reason, row.size, row.payload) == ("empty message", 0, "")


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe\x80 not utf-8 at all \xc3", gzip.compress(b'{"v": 1, "device": "pc1"}')],
    ids=["invalid-utf8", "gzip-with-nul-bytes"],
)
def test_a_binary_reject_does_not_stop_the_batch(database: pw.Database, payload: bytes) -> None:
    # A producer that sends compressed or binary values must not block storing the good samples around it.
    new = db.store_batch([sample("pc1", cpu_percent=10)], [0.1], 1, [Rejection("t/0@3", "not JSON", payload)])

    assert len(new) == 1
    [row] = db.rejected()
    assert (row.reason, row.size) == ("not JSON", len(payload))
    assert len(row.payload) <= 512


def test_the_fleet_is_each_devices_newest_sample_time_and_p_by_name(database: pw.Database) -> None:
    db.store_batch(
        [sample("zeta", TS, cpu_percent=1), sample("alpha", TS + 60, cpu_percent=2), sample("mid", TS, cpu_percent=3)],
        [0.1, 0.2, 0.3], 1, [], on_stored=with_devices,
    )
    db.store_batch([sample("zeta", TS + 30, cpu_percent=4), sample("alpha", TS, cpu_percent=5)], [0.4, 0.5], 1, [],
                   on_stored=with_devices)

    assert db.seen_per_device() == [("alpha", TS + 60, 0.2), ("mid", TS, 0.3), ("zeta", TS + 30, 0.4)]
    assert [db.latest_sample(device).metrics["cpu_percent"] for device in ("alpha", "mid", "zeta")] == [2.0, 3.0, 4.0]


def test_latest_sample_of_a_device_that_never_reported_is_none(database: pw.Database) -> None:
    db.store_batch([sample("pc1", cpu_percent=10)], [0.1], 1, [], on_stored=with_devices)

    assert db.latest_sample("pc9") is None
    assert db.seen_per_device()[0].device == "pc1"


def test_the_latest_label_of_a_sample_wins_and_who_pressed_is_kept(database: pw.Database) -> None:
    hot, other = db.store_batch([sample("pc1", cpu_percent=99), sample("pc2", cpu_percent=5)], [0.9, 0.1], 1, [])

    db.add_label(hot.id, 0, 1001, "alice")
    db.add_label(hot.id, 1, 1002, "bob " + "x" * 300)

    assert latest_labels() == {hot.id: 1}
    labels = list(db.Label.select().order_by(db.Label.id))
    assert [(label.value, label.user_id) for label in labels] == [(0, 1001), (1, 1002)]
    assert labels[0].user_name == "alice"
    assert labels[1].user_name.startswith("bob ") and len(labels[1].user_name) == 200
    assert training_frame(["cpu_percent"])["label"].isna().tolist() == [False, True]
    assert other.id not in latest_labels()


def test_a_batch_of_5000_full_samples_is_stored_in_one_call(database: pw.Database) -> None:
    full = {name: float(i) for i, name in enumerate(KNOWN_METRICS)}
    batch = [Sample(f"pc{i % 50}", TS + i, {**full, "gpu_percent": 1.0}) for i in range(5000)]

    new = db.store_batch(batch, [0.5] * 5000, 7, [])

    assert len(new) == 5000
    assert len({s.id for s in new}) == 5000
    assert stored_rows() == 5000
    latest = db.latest_sample("pc49")
    assert latest is not None
    assert latest.ts == TS + 4999
    assert latest.metrics == {**full, "gpu_percent": 1.0}


def test_a_sample_the_database_refuses_is_rejected_alone_and_the_rest_is_stored(database: pw.Database) -> None:
    # The wire format lets no such sample through; if one still comes (a bug, another producer path), the
    # batch is bisected down to it instead of failing, and being read again, forever.
    batch = [sample(f"pc{i}", cpu_percent=i) for i in range(9)]
    batch[3] = sample("pc\udc80", cpu_percent=3)
    batch[7] = sample("pc7", gpu_percent=math.inf)
    origins = [db.Origin(f"metrics[0]@{i}", b"payload %d" % i, 1_700_000_000_000 + i) for i in range(9)]

    new = db.store_batch(batch, [0.1] * 9, 1, [Rejection("metrics[0]@9", "not JSON", b"{")], origins)

    assert sorted(s.device for s in new) == ["pc0", "pc1", "pc2", "pc4", "pc5", "pc6", "pc8"]
    assert stored_rows() == 7
    reasons = {r.source: r.reason for r in db.Rejected.select()}
    assert reasons.keys() == {"metrics[0]@3", "metrics[0]@7", "metrics[0]@9"}
    assert "the database refused it" in reasons["metrics[0]@3"] and "surrogate" in reasons["metrics[0]@3"]
    assert "the database refused it" in reasons["metrics[0]@7"]
    assert db.Rejected.get(db.Rejected.source == "metrics[0]@3").payload == "payload 3"


def test_a_refused_sample_without_an_origin_is_rejected_under_its_device_and_time(database: pw.Database) -> None:
    new = db.store_batch([sample("pc\udc80", cpu_percent=3), sample("pc1", cpu_percent=4)], [None, None], None, [])

    assert [s.device for s in new] == ["pc1"]
    [row] = db.rejected()
    assert row.source == f"pc\\udc80@{TS!r}" and "the database refused it" in row.reason


def test_a_redelivered_reject_is_kept_once_but_a_new_message_at_a_reused_offset_is_kept_too(
    database: pw.Database,
) -> None:
    first = Rejection("metrics[0]@0", "not JSON", b"{", 1_700_000_000_000)
    db.store_batch([], [], None, [first])
    db.store_batch([], [], None, [first])  # Kafka redelivers it after a crash
    # The topic was deleted and created again: offset 0 is another message now.
    db.store_batch([], [], None, [Rejection("metrics[0]@0", "not JSON", b"{", 1_800_000_000_000)])
    db.store_batch([], [], None, [Rejection("metrics[0]@0", "not JSON", b"[", None)])

    assert [r.source for r in db.rejected()] == ["metrics[0]@0"] * 3


def test_a_reject_with_nul_and_lone_surrogates_in_its_text_is_kept_readable(database: pw.Database) -> None:
    db.store_batch([], [], None, [Rejection("t[0]@\udc80\x00", "bad \udcff name\x00", b"\x00\xff")])

    [row] = db.rejected()
    assert (row.source, row.reason, row.payload) == ("t[0]@\\udc80\\x00", "bad \\udcff name\\x00", "\\x00\ufffd")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(VALUES, min_size=1, max_size=12),
       forged=st.lists(st.sampled_from(["pc\udc80", "\ud800", "gpu\udfff"]), max_size=2), data=st.data())
def test_a_batch_of_anything_stores_every_valid_message_and_rejects_the_rest_with_a_reason(
    database: pw.Database, values: list[bytes], forged: list[str], data: st.DataObject
) -> None:
    # The poller's path: each value is parsed; a WireError is a rejection, a sample goes to the store. The
    # forged samples stand for anything that slips past the wire format and that the database refuses.
    samples, origins, rejects = [], [], []
    for offset, value in enumerate(values):
        source = f"t[0]@{offset}-{hashlib.sha256(value).hexdigest()}"  # examples share the database
        try:
            samples.append(parse(value))
            origins.append(db.Origin(source, value))
        except WireError as exc:
            rejects.append(Rejection(source, str(exc), value))
    valid = list(samples)
    for device in forged:
        at = data.draw(st.integers(min_value=0, max_value=len(samples)))
        samples.insert(at, Sample(device, TS, {"cpu_percent": 1.0}))
        origins.insert(at, db.Origin(f"forged {device!r}", None))

    db.store_batch(samples, [None] * len(samples), None, rejects, origins)

    for s in valid:
        row = db.Metric.get_or_none((db.Metric.device == s.device) & (db.Metric.ts == s.ts))
        assert row is not None, f"{s} was not stored"
    reasons = {r.source: r.reason for r in db.Rejected.select()}
    for r in rejects:
        assert reasons[r.source] == r.reason
    for device in forged:
        assert "the database refused it" in reasons[f"forged {device!r}"]
