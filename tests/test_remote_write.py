"""The remote-write receiver on hand-built writes, as Prometheus sends them after scraping node_exporter: what a
machine's samples become in the store, over real HTTP, against a real SQLite store (and a real broker for the
fleet mode)."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cramjam
import peewee as pw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.wire import Sample, encode, parse
from bot import db
from bot.config import load_settings
from bot.intake import remote_write
from bot.intake.node_exporter import NodeExporter, key
from bot.intake.prompb import remote_pb2, types_pb2
from bot.intake.remote_write import ADOPT_AFTER_S, ADOPT_EVERY_S, MAX_BODY, Receiver
from bot.intake.remote_write_http import PATH, KafkaSink, RemoteWriteServer
from bot.intake.sources import KafkaSource
from tests.fakes.node_exporter import STALE_NAN, body, machine, write_request
from tests.fakes.scenario import TOKEN as BOT_TOKEN
from tests.fakes.services import free_port
from tests.test_poller import read

NOW = time.time()
T0 = round(NOW - 600, 3)  # scrapes of a few minutes ago, 15 s apart
TOKEN = "s3cret-token-of-the-fleet"


def stored_rows() -> dict[tuple[str, float], db.Metric]:
    return {(m.device, m.ts): m for m in db.Metric.select()}


def into_store(samples: list, rejects: list) -> None:
    """The store as the bot's Kafka path has it, without a model: what /status and the charts read."""
    db.store_batch(samples, [None] * len(samples), None, rejects)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[pw.Database]:
    database = db.open_database(f"sqlite:///{tmp_path}/rigwatch.sqlite3")
    yield database
    database.close()


class Serving:
    """A RemoteWriteServer on a loopback port, in an event loop of its own thread, as the bot runs it."""

    def __init__(self, receiver: Receiver, token: str | None = None) -> None:
        self.receiver = receiver
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        self.loop = asyncio.new_event_loop()
        self.server = RemoteWriteServer(receiver, "127.0.0.1", self.port, token)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Serving:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def post(self, data: bytes, token: str | None = TOKEN, **headers: str) -> tuple[int, str]:
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                   "X-Prometheus-Remote-Write-Version": "0.1.0", **headers}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def scrape_at(instance: str, ts: float, **node: object) -> bytes:
    return body(write_request({instance: [(ts, machine(**node))]}))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- mapping


def test_a_scrape_becomes_one_sample_with_the_metrics_of_the_agent(store: pw.Database) -> None:
    receiver = Receiver(into_store)
    receiver.process(scrape_at("web1:9100", T0, idle_s=7500, busy_s=2500, load1=4.0, net_bytes=1e9, disk_bytes=5e9))
    receiver.process(scrape_at("web1:9100", T0 + 15, idle_s=7503, busy_s=2512, load1=4.0, net_bytes=1e9 + 3e6,
                               disk_bytes=5e9 + 15e6, temps=(48.0, 71.5, 300.0)))

    rows = stored_rows()
    assert sorted(rows) == [("web1", T0), ("web1", T0 + 15)]
    first, second = rows["web1", T0], rows["web1", T0 + 15]
    assert first.cpu_percent is None  # a counter needs two scrapes
    # 8 CPUs, each 3 s idle and 12 s busy over 15 s: 80 % busy.
    assert second.cpu_percent == pytest.approx(80.0)
    assert second.load_1m == pytest.approx(0.5)  # node_load1 4.0 on 8 CPUs
    assert second.mem_percent == pytest.approx(50.0) and second.swap_percent == pytest.approx(25.0)
    assert second.disk_percent == pytest.approx(85.0)  # the fullest real filesystem, /data
    assert second.cpu_temp_c == pytest.approx(71.5)  # the hottest sensor that reads a real temperature
    # eth0 and eth1 each received and sent 3 MB in 15 s; lo does not count. Three disks, 15 MB read each.
    assert second.net_recv_bps == pytest.approx(2 * 3e6 / 15) and second.net_sent_bps == pytest.approx(2 * 3e6 / 15)
    assert second.disk_read_bps == pytest.approx(3 * 15e6 / 15)
    assert second.disk_write_bps == pytest.approx(3 * 30e6 / 15)


def test_every_real_filesystem_is_named_and_pseudo_or_read_only_ones_are_left_out() -> None:
    mapper = NodeExporter()
    filesystems = {"/": ("ext4", 100e9, 60e9, 0), "/var/lib/postgresql": ("xfs", 500e9, 10e9, 0),
                   "/run": ("tmpfs", 3e9, 1e9, 0), "/snap/core/1": ("squashfs", 1e8, 0.0, 1),
                   "/mnt/cdrom": ("ext4", 1e9, 0.0, 1), "/weird": ("", 1e9, 0.0, 0)}
    [(_scrape, sample)] = scraped(mapper, "db1", machine(filesystems=filesystems))

    assert sample is not None
    assert sample.filesystems == {"/": 40.0, "/var/lib/postgresql": 98.0}
    assert sample.metrics["disk_percent"] == 98.0
    # What fleet mode produces of it is a valid wire message.
    assert parse(encode(sample.device, sample.ts, sample.metrics, filesystems=sample.filesystems)).device == "db1"


def scraped(mapper: NodeExporter, device: str, scrape: dict) -> list[tuple[object, Sample | None]]:
    """The samples of one scrape handed to the mapper series by series."""
    values = [(k, value) for (name, labels), value in scrape.items() if (k := key(name, dict(labels))) is not None]
    mapper.add(device, round(T0 * 1000), values, NOW)
    return mapper.take(NOW)


def test_a_filesystem_with_blocks_reserved_for_root_reads_as_df_shows_it(store: pw.Database) -> None:
    # 100 GB, 40 GB used, 5 % (5 GB) reserved for root: 55 GB available to users. df says 40 / 95 = 42 %.
    Receiver(into_store).process(scrape_at("pc1:9100", T0, filesystems={"/": ("ext4", 100e9, 55e9, 0)},
                                           reserved=0.05))

    row = stored_rows()["pc1", T0]
    assert json.loads(row.filesystems) == {"/": 42.1}
    assert row.disk_percent == pytest.approx(42.1)


def test_at_most_32_filesystems_are_kept_the_fullest_ones() -> None:
    mapper = NodeExporter()
    filesystems = {f"/data{i}": ("ext4", 100.0, 100.0 - i, 0) for i in range(40)}
    [(_scrape, sample)] = scraped(mapper, "nas", machine(filesystems=filesystems))

    assert sample is not None and sample.filesystems is not None
    assert len(sample.filesystems) == 32 and min(sample.filesystems.values()) == 8.0


def test_a_reboot_resets_the_counters_without_a_wild_figure(store: pw.Database) -> None:
    receiver = Receiver(into_store)
    receiver.process(scrape_at("pc1:9100", T0, idle_s=90000, busy_s=10000, net_bytes=8e11))
    receiver.process(scrape_at("pc1:9100", T0 + 15, idle_s=10, busy_s=5, net_bytes=1e6))  # rebooted meanwhile
    receiver.process(scrape_at("pc1:9100", T0 + 30, idle_s=22, busy_s=8, net_bytes=1e6 + 15e5))

    rows = stored_rows()
    after = rows["pc1", T0 + 15]
    assert after.cpu_percent is None and after.net_recv_bps is None  # no figure rather than a wrong one
    assert after.mem_percent == pytest.approx(50.0)  # the gauges are there as ever
    assert rows["pc1", T0 + 30].cpu_percent == pytest.approx(20.0)  # 12 s idle of 15 per CPU
    assert rows["pc1", T0 + 30].net_recv_bps == pytest.approx(2 * 15e5 / 15)


def test_a_series_that_is_missing_leaves_its_metric_missing_not_zero(store: pw.Database) -> None:
    scrape = machine(temps=())
    del scrape["node_memory_MemAvailable_bytes", ()]
    del scrape["node_load1", ()]
    Receiver(into_store).process(body(write_request({"pi4:9100": [(T0, scrape)]})))

    row = stored_rows()["pi4", T0]
    assert row.mem_percent is None and row.load_1m is None and row.cpu_temp_c is None
    assert row.swap_percent == pytest.approx(25.0) and row.disk_percent == pytest.approx(85.0)


def test_a_stale_marker_is_not_a_reading(store: pw.Database) -> None:
    scrape = machine()
    stale = struct.unpack("<d", struct.pack("<Q", STALE_NAN))[0]
    scrape["node_load1", ()] = stale
    scrape["node_memory_MemAvailable_bytes", ()] = float("inf")
    Receiver(into_store).process(body(write_request({"pc2:9100": [(T0, scrape)]})))

    row = stored_rows()["pc2", T0]
    assert row.load_1m is None and row.mem_percent is None
    assert row.swap_percent == pytest.approx(25.0)


def test_a_machine_gone_stale_stores_nothing() -> None:
    """When a target disappears, Prometheus writes a stale marker for each of its series: no sample of NaNs."""
    stale = struct.unpack("<d", struct.pack("<Q", STALE_NAN))[0]
    scrape = {key: stale for key in machine()}
    stored: list = []
    Receiver(lambda samples, rejects: stored.extend(samples)).process(body(write_request({"pc3:9100": [(T0, scrape)]})))

    assert stored == []


def test_two_instances_in_one_write_become_two_machines(store: pw.Database) -> None:
    write = write_request({"web1:9100": [(T0, machine(mem_available=4e9))],
                           "db1.example.org:9100": [(T0, machine(mem_available=12e9))]})
    outcome = Receiver(into_store).process(body(write))

    rows = stored_rows()
    assert sorted(rows) == [("db1.example.org", T0), ("web1", T0)]
    assert rows["web1", T0].mem_percent == pytest.approx(75.0)
    assert rows["db1.example.org", T0].mem_percent == pytest.approx(25.0)
    assert outcome.series == 2000 and outcome.samples == 2


def test_a_sender_that_orders_labels_otherwise_is_read_the_same() -> None:
    """Prometheus sorts labels, and the receiver reads its layout fast; any other valid encoding says the same."""
    def samples_of(layout: str) -> list[Sample]:
        got: list[Sample] = []
        receiver = Receiver(lambda samples, rejects: got.extend(samples))
        for i in range(3):
            write = write_request({"pc1:9100": [(T0 + 15 * i, machine(idle_s=100 + 10 * i, busy_s=50 + 3 * i))]})
            if layout == "labels reversed":
                for series in write.timeseries:
                    labels = list(reversed(series.labels))
                    del series.labels[:]
                    series.labels.extend(labels)
                receiver.process(body(write))
            elif layout == "samples first":  # protobuf lets fields come in any order
                raw = b""
                for series in write.timeseries:
                    encoded = (types_pb2.TimeSeries(samples=series.samples).SerializeToString()
                               + types_pb2.TimeSeries(labels=series.labels).SerializeToString())
                    raw += b"\n" + _varint(len(encoded)) + encoded
                receiver.process(bytes(cramjam.snappy.compress_raw(raw)))
            else:
                receiver.process(body(write))
        return got

    as_prometheus = samples_of("as Prometheus")

    assert len(as_prometheus) == 3 and as_prometheus[2].metrics["cpu_percent"] == pytest.approx(23.1)
    for layout in ("labels reversed", "samples first"):
        assert [(s.ts, s.metrics, s.filesystems) for s in samples_of(layout)] == [
            (s.ts, s.metrics, s.filesystems) for s in as_prometheus], layout


def _varint(value: int) -> bytes:
    out = b""
    while value >= 0x80:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def test_the_device_label_can_be_another_one(store: pw.Database) -> None:
    write = write_request({"10.0.0.7:9100": [(T0, machine())]})
    for series in write.timeseries:
        series.labels.add(name="nodename", value="rack3-node7")
    Receiver(into_store, device_label="nodename").process(body(write))

    assert list(stored_rows()) == [("rack3-node7", T0)]


def test_a_scrape_split_over_two_writes_becomes_one_sample(store: pw.Database) -> None:
    receiver = Receiver(into_store)
    receiver.process(scrape_at("pc1:9100", T0 - 15))  # a whole scrape first: now the receiver knows its size
    whole = write_request({"pc1:9100": [(T0, machine(idle_s=64810, busy_s=21605, mem_available=2e9))]})
    first, rest = write_request({}), write_request({})
    for i, series in enumerate(whole.timeseries):
        (first if i < 100 else rest).timeseries.append(series)  # in the middle of what is read

    receiver.process(body(first))
    assert ("pc1", T0) not in stored_rows()  # waits for its rest
    receiver.process(body(rest))

    row = stored_rows()["pc1", T0]
    assert row.mem_percent == pytest.approx(87.5) and row.disk_percent == pytest.approx(85.0)
    assert row.cpu_percent == pytest.approx(33.3) and row.load_1m == pytest.approx(0.25)


def test_a_scrape_whose_rest_never_comes_is_stored_after_its_grace(store: pw.Database) -> None:
    receiver = Receiver(into_store, grace_s=10.0)
    receiver.process(scrape_at("pc1:9100", T0 - 15), now=NOW)
    half = write_request({})
    half.timeseries.extend(list(write_request({"pc1:9100": [(T0, machine())]}).timeseries)[:100])
    receiver.process(body(half), now=NOW)

    assert receiver.flush(now=NOW + 5) == 0
    assert receiver.flush(now=NOW + 10) == 1
    assert ("pc1", T0) in stored_rows()


def split(scrape: remote_pb2.WriteRequest, later: Callable[[int, types_pb2.TimeSeries], bool]) -> tuple[bytes, bytes]:
    """A write cut in two, as Prometheus cuts a scrape between two batches (or shards): the series `later`
    picks (by index and series) come in the second."""
    first, rest = write_request({}), write_request({})
    for i, series in enumerate(scrape.timeseries):
        (rest if later(i, series) else first).timeseries.append(series)
    return body(first), body(rest)


def test_the_first_part_of_a_split_scrape_is_kept_before_its_write_is_answered(store: pw.Database) -> None:
    receiver = Receiver(into_store, held=db.HeldParts())
    receiver.process(scrape_at("pc1:9100", T0 - 15), now=NOW)
    first, rest = split(write_request({"pc1:9100": [(T0, machine(mem_available=2e9))]}), lambda i, _s: i >= 100)
    receiver.process(first, now=NOW)
    assert ("pc1", T0) not in stored_rows() and db.HeldPart.select().count() == 1

    # The bot is killed: what the first write brought is in the database only. The next one takes it back, and
    # knows from the database how many series a whole scrape has: the rest completes it at once.
    restarted = Receiver(into_store, held=db.HeldParts())
    assert restarted.recover() == 1
    assert restarted.process(rest).samples == 1

    row = stored_rows()["pc1", T0]
    assert row.mem_percent == pytest.approx(87.5)  # from the first write
    assert row.disk_percent == pytest.approx(85.0)  # /data, from the rest
    assert db.HeldPart.select().count() == 0  # stored: nothing kept any more


def test_a_part_kept_by_a_bot_that_stopped_for_good_is_stored_by_another(store: pw.Database) -> None:
    now = time.time()
    first, _rest = split(write_request({"pc1:9100": [(T0, machine(mem_available=2e9))]}), lambda i, _s: i >= 100)
    stopped = Receiver(into_store, held=db.HeldParts())
    stopped.process(scrape_at("pc1:9100", T0 - 15), now=now)
    stopped.process(first, now=now)
    stopped.flush(True, now=now)  # at shutdown the part stays kept, waiting for the rest
    other = Receiver(into_store, held=db.HeldParts())

    assert other.flush(now=now + ADOPT_AFTER_S - 1) == 0  # not yet: the bot that kept it may still store it
    assert other.flush(now=now + ADOPT_AFTER_S + ADOPT_EVERY_S) == 1
    assert stored_rows()["pc1", T0].mem_percent == pytest.approx(87.5)
    assert db.HeldPart.select().count() == 0


def test_a_part_left_of_a_scrape_stored_already_is_forgotten(store: pw.Database) -> None:
    receiver = Receiver(into_store, held=db.HeldParts())
    receiver.process(scrape_at("pc1:9100", T0))
    db.HeldPart.create(device="pc1", ts_ms=round(T0 * 1000), part='[[["load1"], 1.0]]', at=time.time())

    assert receiver.flush(now=time.time() + ADOPT_AFTER_S + ADOPT_EVERY_S) == 0
    assert db.HeldPart.select().count() == 0
    assert list(stored_rows()) == [("pc1", T0)]


def test_series_that_come_after_their_scrape_was_stored_make_the_next_one_wait_for_them(
        store: pw.Database) -> None:
    receiver = Receiver(into_store)
    three = {"/": ("ext4", 100e9, 60e9, 0), "/boot/efi": ("vfat", 5e8, 4e8, 0), "/run": ("tmpfs", 3e9, 3e9, 0)}
    receiver.process(scrape_at("pc1:9100", T0 - 30, filesystems=three), now=NOW)
    # /data is mounted: a scrape has 7 series more, and they come in a write of their own.
    for ts in (T0 - 15, T0):
        first, rest = split(write_request({"pc1:9100": [(ts, machine())]}),
                            lambda _i, series: any(label.value == "/data" for label in series.labels))
        receiver.process(first, now=NOW)
        receiver.process(rest, now=NOW)

    rows = stored_rows()
    assert rows["pc1", T0 - 15].disk_percent == pytest.approx(40.0)  # stored without /data: it seemed whole
    assert rows["pc1", T0].disk_percent == pytest.approx(85.0)  # waited for /data, now known to come
    assert db.Metric.select().count() == 3


def test_a_retried_write_stores_nothing_twice_and_computes_the_same_cpu(store: pw.Database) -> None:
    receiver = Receiver(into_store)
    receiver.process(scrape_at("pc1:9100", T0, idle_s=1000, busy_s=1000))
    second = scrape_at("pc1:9100", T0 + 15, idle_s=1010, busy_s=1005)
    store.drop_tables([db.Metric])  # the store fails: the write is answered 503, and Prometheus retries it
    with pytest.raises(Exception, match="no such table"):
        receiver.process(second)
    store.create_tables([db.Metric])

    receiver.process(second)
    receiver.process(second)  # and once more: the answer to the retry was lost

    rows = stored_rows()
    assert list(rows) == [("pc1", T0 + 15)]
    assert rows["pc1", T0 + 15].cpu_percent == pytest.approx(33.3)


def test_a_bad_device_or_time_is_rejected_with_a_reason_and_the_rest_stored(store: pw.Database) -> None:
    write = write_request({"[fe80::1]:9100": [(T0, machine())], "good:9100": [(T0, machine())],
                           "late:9100": [(NOW + 7200, machine())], "old:9100": [(123.0, machine())]})
    outcome = Receiver(into_store).process(body(write))

    assert list(stored_rows()) == [("good", T0)]
    reasons = {r.source: r.reason for r in db.Rejected.select()}
    assert "does not name a device" in reasons["remote write: instance=[fe80::1]:9100"]
    assert "ahead of the receiver's clock" in reasons["remote write: late"]
    assert "out of range" in reasons["remote write: old"]
    assert len(outcome.refused) == 3


# ---------------------------------------------------------------------------------------------- HTTP


def test_a_write_is_answered_204_once_stored(store: pw.Database) -> None:
    with Serving(Receiver(into_store), TOKEN) as server:
        status, _text = server.post(scrape_at("pc1:9100", T0))

    assert status == 204
    assert list(stored_rows()) == [("pc1", T0)]


def test_writes_sent_at_once_by_several_shards_are_each_stored_once(store: pw.Database) -> None:
    writes = [scrape_at(f"shard{i}-pc{j}:9100", T0 + 15 * k) for i in range(4) for j in range(3) for k in range(2)]
    with Serving(Receiver(into_store), TOKEN) as server, ThreadPoolExecutor(4) as shards:
        answers = list(shards.map(lambda data: server.post(data)[0], writes))

    assert answers == [204] * len(writes)
    assert len(stored_rows()) == len(writes) == db.Metric.select().count()


def test_a_write_waits_for_the_one_being_read_and_both_are_stored_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[list[str]] = []
    receiver = Receiver(lambda samples, rejects: batches.append(sorted(s.device for s in samples)))
    reading, go_on = threading.Event(), threading.Event()
    real_frames = remote_write.frames

    def held(raw: memoryview) -> list[bytes]:
        if not reading.is_set():  # the first write is held while it is read
            reading.set()
            go_on.wait(10)
        return real_frames(raw)

    monkeypatch.setattr(remote_write, "frames", held)
    with ThreadPoolExecutor(2) as senders:
        first = senders.submit(receiver.process, scrape_at("pc1:9100", T0))
        assert reading.wait(10)
        second = senders.submit(receiver.process, scrape_at("pc2:9100", T0))
        deadline = time.monotonic() + 10
        while receiver._coming < 2 and time.monotonic() < deadline:  # the second one waits its turn to be read
            time.sleep(0.001)
        go_on.set()
        outcomes = [first.result(10), second.result(10)]

    assert [o.samples for o in outcomes] == [1, 1]
    assert batches == [["pc1", "pc2"]]  # one store, so one prediction, for both


def test_without_the_token_nothing_is_stored(store: pw.Database) -> None:
    with Serving(Receiver(into_store), TOKEN) as server:
        answers = [server.post(scrape_at("pc1:9100", T0), token=None)[0],
                   server.post(scrape_at("pc1:9100", T0), token="s3cret-token-of-the-flee")[0],
                   server.post(scrape_at("pc1:9100", T0), token=None, Authorization=f"Basic {TOKEN}")[0]]

    assert answers == [401, 401, 401]
    assert stored_rows() == {}


def test_a_body_that_cannot_be_read_gets_400_with_the_reason(store: pw.Database,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    whole = scrape_at("pc1:9100", T0)
    raw = bytes(cramjam.snappy.decompress_raw(whole))
    with Serving(Receiver(into_store)) as server:
        not_snappy = server.post(b"hello, world")
        cut_short = server.post(bytes(cramjam.snappy.compress_raw(raw[:-7])))
        again = server.post(bytes(cramjam.snappy.compress_raw(raw[:-7])))

    assert not_snappy[0] == 400 and "snappy" in not_snappy[1]
    assert cut_short[0] == 400 and "corrupt or cut short" in cut_short[1] and again[0] == 400
    assert stored_rows() == {}
    assert caplog.text.count("cut short") == 1  # said once, not once per retry of the sender


def test_a_body_over_16_mib_decompressed_gets_413(store: pw.Database) -> None:
    huge = bytes(cramjam.snappy.compress_raw(b"\x00" * (MAX_BODY + 1)))
    with Serving(Receiver(into_store)) as server:
        status, text = server.post(huge)

    assert status == 413 and "decompressed" in text


def test_remote_write_2_is_refused_with_415_so_the_sender_falls_back(store: pw.Database) -> None:
    with Serving(Receiver(into_store)) as server:
        status, _text = server.post(scrape_at("pc1:9100", T0),
                                    **{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"})

    assert status == 415


def test_only_refused_series_get_400(store: pw.Database) -> None:
    with Serving(Receiver(into_store)) as server:
        status, text = server.post(scrape_at("my_host!:9100", T0))

    assert status == 400 and "does not name a device" in text


def test_fleet_mode_answers_503_while_the_broker_is_out_then_delivers(store: pw.Database, kafka: str,
                                                                      topic: str) -> None:
    dead = KafkaSink(f"127.0.0.1:{free_port()}", topic, into_rejected, timeout_s=1.0)
    with Serving(Receiver(dead)) as server:
        status, text = server.post(scrape_at("pc1:9100", T0))
    assert status == 503 and "try again" in text

    sink = KafkaSink(kafka, topic, into_rejected)
    with Serving(Receiver(sink)) as server:
        status, _text = server.post(scrape_at("pc1:9100", T0))
    sink.close()
    assert status == 204
    # The bot's own source reads what was produced.
    source = KafkaSource(load_settings({"TELEGRAM_BOT_TOKEN": BOT_TOKEN, "KAFKA_BOOTSTRAP_SERVERS": kafka,
                                        "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": f"rw-{topic}",
                                        "KAFKA_SESSION_TIMEOUT_MS": "2000"}))
    try:
        batch = read(source, 1)
    finally:
        source.close()
    [sample] = batch.samples
    assert (sample.device, sample.ts, sample.metrics["mem_percent"]) == ("pc1", T0, 50.0)


def into_rejected(rejects: list) -> None:
    db.store_batch([], [], None, rejects)


# ---------------------------------------------------------------------------------------------- fuzzing

VALID = bytes(cramjam.snappy.decompress_raw(scrape_at("pc9:9100", T0)))
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.just(struct.unpack("<d", struct.pack("<Q", STALE_NAN))[0]))
timestamps = st.one_of(st.integers(-(2**63), 2**63 - 1), st.just(round(T0 * 1000)))
label_text = st.text(max_size=300)


@st.composite
def writes(draw: st.DrawFn) -> bytes:
    """A body as a confused, broken or hostile sender could send it."""
    kind = draw(st.sampled_from(["random", "truncated", "mangled", "series", "snappy-truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "truncated":
        return bytes(cramjam.snappy.compress_raw(VALID[:draw(st.integers(0, len(VALID) - 1))]))
    if kind == "mangled":
        raw = bytearray(VALID)
        for _ in range(draw(st.integers(1, 20))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(cramjam.snappy.compress_raw(bytes(raw)))
    if kind == "snappy-truncated":
        whole = bytes(cramjam.snappy.compress_raw(VALID))
        return whole[:draw(st.integers(0, len(whole) - 1))]
    request = write_request({})
    for _ in range(draw(st.integers(0, 5))):
        series = request.timeseries.add()
        names = draw(st.lists(st.sampled_from(["__name__", "instance", "job", "cpu", "mode", "mountpoint", "fstype"])
                              | label_text, max_size=draw(st.sampled_from([6, 300]))))
        for name in names:
            value = draw(st.sampled_from(["node_cpu_seconds_total", "node_load1", "node_filesystem_size_bytes",
                                          "node_hwmon_temp_celsius", "pc1:9100", "idle", "/"]) | label_text)
            series.labels.add(name=name, value=value)
        for _ in range(draw(st.integers(0, 4))):
            series.samples.add(value=draw(values), timestamp=draw(timestamps))
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def test_any_body_gets_a_clear_answer_and_the_intake_goes_on(store: pw.Database) -> None:
    with Serving(Receiver(into_store)) as server:

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(data=writes())
        def answered(data: bytes) -> None:
            status, text = server.post(data)
            assert status in (204, 400, 413), text
            assert status == 204 or text.strip()

        answered()
        status, _text = server.post(scrape_at("after-fuzz:9100", T0))

    assert status == 204
    assert ("after-fuzz", T0) in stored_rows()
