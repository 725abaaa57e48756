"""Two remote-write receivers on one database, as two bot processes behind a load balancer: Prometheus split a
scrape over two writes and each receiver got one. Whichever order and timing, one sample is stored with every
series, by one of them, and never a second; on SQLite and on PostgreSQL (where they run truly at once, each on a
connection of its own)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cramjam
import peewee as pw
import pytest

from agent.wire import Sample
from bot import db
from bot.intake.remote_write import GRACE_S, Outcome, Receiver
from tests.fakes.node_exporter import body, machine, write_request
from tests.test_remote_write import split


def cramjam_raw(data: bytes) -> bytes:
    """The WriteRequest bytes of a body."""
    return bytes(cramjam.snappy.decompress_raw(data))

NOW = time.time()
T0 = round(NOW - 600, 3)


class Bot:
    """One bot process's receiver, and what it stored."""

    def __init__(self, fail: int = 0) -> None:
        self.stored: list[tuple[str, float]] = []
        self.fail = fail  # stores that fail before one works
        self.receiver = Receiver(self.store, held=db.HeldParts())

    def store(self, samples: list[Sample], rejects: list) -> None:
        if self.fail:
            self.fail -= 1
            raise pw.OperationalError("the store is out")
        db.store_batch(samples, [None] * len(samples), None, rejects)
        self.stored += [(sample.device, sample.ts) for sample in samples]


def halves(ts: float, device: str = "pc1") -> tuple[bytes, bytes]:
    """A scrape cut in two: memory (87.5 % used) in the first write, the /data filesystem (85 %) in the second."""
    return split(write_request({f"{device}:9100": [(ts, machine(mem_available=2e9))]}),
                 lambda _i, series: any(label.value == "/data" for label in series.labels))


def row(ts: float, device: str = "pc1") -> db.Metric:
    return db.Metric.get(db.Metric.device == device, db.Metric.ts == ts)


def whole_with_both(ts: float, device: str = "pc1") -> bool:
    sample = row(ts, device)
    return sample.mem_percent == pytest.approx(87.5) and sample.disk_percent == pytest.approx(85.0)


def at_once(*calls: Callable[[], Outcome | int]) -> list[Outcome | int]:
    """Run the calls in threads of their own, released at the same moment."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Outcome | int]) -> Outcome | int:
        start.wait(10)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result(30) for future in [pool.submit(run, call) for call in calls]]


@pytest.mark.parametrize("first_to", ["a", "b"])
def test_two_bots_with_a_part_each_store_one_sample_with_both(database: pw.Database, first_to: str) -> None:
    a, b = Bot(), Bot()
    a.receiver.process(body(write_request({"pc1:9100": [(T0 - 15, machine())]})))  # the machine's size is known
    first, rest = halves(T0)
    one, other = (a, b) if first_to == "a" else (b, a)

    assert one.receiver.process(first).samples == 0  # kept in the database: the rest may come to the other bot
    assert other.receiver.process(rest).samples == 1  # found the first part there

    assert whole_with_both(T0)
    later = time.time() + GRACE_S + 1
    assert a.receiver.flush(now=later) == 0 and b.receiver.flush(now=later) == 0
    assert sorted(a.stored + b.stored) == [("pc1", T0 - 15), ("pc1", T0)]  # each scrape stored once, by one of them
    assert db.HeldPart.select().count() == 0


@pytest.mark.parametrize("first_to", ["a", "b"])
def test_parts_of_the_same_scrapes_at_both_bots_at_the_same_moment_become_one_sample_each(
        database: pw.Database, first_to: str) -> None:
    a, b = Bot(), Bot()
    a.receiver.process(body(write_request({"pc1:9100": [(T0 - 15, machine())]})))
    times = [T0 + 15 * i for i in range(12)]
    for ts in times:
        first, rest = halves(ts)
        one, other = (a, b) if first_to == "a" else (b, a)
        outcomes = at_once(lambda one=one, first=first: one.receiver.process(first),
                           lambda other=other, rest=rest: other.receiver.process(rest))
        assert sorted(outcome.samples for outcome in outcomes) == [0, 1]  # type: ignore[union-attr]

    assert all(whole_with_both(ts) for ts in times)
    stored = [ts for _device, ts in a.stored + b.stored]
    assert sorted(stored) == [T0 - 15, *times], "one store of each scrape, never a second one"
    assert db.HeldPart.select().count() == 0


def thirds(ts: float) -> tuple[bytes, bytes, bytes]:
    """A scrape cut in three: memory (87.5 % used), filesystems (/data at 85 %), and the rest (the load)."""
    parts = write_request({}), write_request({}), write_request({})
    for series in write_request({"pc1:9100": [(ts, machine(mem_available=2e9))]}).timeseries:
        name = series.labels[0].value  # __name__ sorts first
        parts[0 if name.startswith("node_memory_") else 1 if name.startswith("node_filesystem_") else 2
              ].timeseries.append(series)
    return body(parts[0]), body(parts[1]), body(parts[2])


def test_a_bot_completing_a_scrape_while_the_other_keeps_a_part_of_it_waits_for_it(database: pw.Database) -> None:
    """The first bot kept a part; it is inside the transaction that keeps a second one (written, not committed: it
    stores another machine's sample with it) when the last part comes to the other bot. The other waits for the
    first's transaction, then finds both parts."""
    storing, go_on = threading.Event(), threading.Event()

    class Slow(Bot):
        def store(self, samples: list[Sample], rejects: list) -> None:
            storing.set()
            assert go_on.wait(20)
            super().store(samples, rejects)

    a, b = Slow(), Bot()
    go_on.set()
    a.receiver.process(body(write_request({"pc1:9100": [(T0 - 15, machine())]})))
    memory, filesystems, rest = thirds(T0)
    assert a.receiver.process(memory).samples == 0
    go_on.clear()
    storing.clear()
    with_another = write_request({"pc2:9100": [(T0, machine())]})
    with_another.MergeFromString(cramjam_raw(filesystems))
    with ThreadPoolExecutor(2) as pool:
        keeping = pool.submit(a.receiver.process, body(with_another))
        assert storing.wait(10)
        completing = pool.submit(b.receiver.process, rest)
        time.sleep(0.5)
        assert not completing.done(), completing.exception()  # waits for the first bot's transaction
        go_on.set()
        assert keeping.result(20).samples == 1  # pc2's
        assert completing.result(20).samples == 1

    assert whole_with_both(T0) and row(T0).load_1m == pytest.approx(0.25)
    assert db.HeldPart.select().count() == 0


def test_both_bots_waiting_out_the_grace_at_the_same_moment_store_it_once_with_both(database: pw.Database) -> None:
    """A third part never came: both bots wait out their grace, and flush at the very same moment."""
    a, b = Bot(), Bot()
    a.receiver.process(body(write_request({"pc1:9100": [(T0 - 15, machine())]})))
    scrape = write_request({"pc1:9100": [(T0, machine(mem_available=2e9))]})
    first, second, lost = write_request({}), write_request({}), write_request({})
    for series in scrape.timeseries:
        name = series.labels[0].value
        part = first if name.startswith("node_memory_") else second if name.startswith("node_filesystem_") else lost
        part.timeseries.append(series)
    now = time.time()
    a.receiver.process(body(first), now=now)
    b.receiver.process(body(second), now=now)

    flushed = at_once(lambda: a.receiver.flush(now=now + GRACE_S), lambda: b.receiver.flush(now=now + GRACE_S))

    assert sorted(flushed) == [0, 1]  # type: ignore[type-var]
    assert [ts for _device, ts in a.stored + b.stored].count(T0) == 1
    assert whole_with_both(T0)
    assert db.HeldPart.select().count() == 0


def test_a_bot_killed_after_keeping_its_part_loses_nothing(database: pw.Database) -> None:
    a, b = Bot(), Bot()
    a.receiver.process(body(write_request({"pc1:9100": [(T0 - 15, machine())]})))
    first, rest = halves(T0)
    a.receiver.process(first)
    del a  # killed: its part is in the database only

    assert b.receiver.process(rest).samples == 1
    assert whole_with_both(T0)
    assert db.HeldPart.select().count() == 0


def test_a_store_that_fails_while_completing_a_scrape_keeps_the_other_bots_part(database: pw.Database) -> None:
    a, b = Bot(), Bot(fail=1)
    a.receiver.process(body(write_request({"pc1:9100": [(T0 - 15, machine())]})))
    first, rest = halves(T0)
    a.receiver.process(first)

    with pytest.raises(Exception, match="the store is out"):
        b.receiver.process(rest)  # answered 503: Prometheus sends it again
    assert db.HeldPart.select().count() == 1  # the first part is still kept
    assert b.receiver.process(rest).samples == 1

    assert whole_with_both(T0)
    assert db.HeldPart.select().count() == 0


def test_the_size_of_a_machine_learnt_by_one_bot_makes_the_other_wait_for_the_rest(database: pw.Database) -> None:
    """A machine never seen: its first scrape seems whole with its first part, and the rest, at the other bot,
    comes after it was stored. Both bots learn from it that a whole scrape is bigger: the next one waits."""
    a, b = Bot(), Bot()
    first, rest = halves(T0)
    assert a.receiver.process(first).samples == 1
    assert b.receiver.process(rest).samples == 0  # late: left out, not a second sample of the scrape

    for ts, one, other in ((T0 + 15, a, b), (T0 + 30, b, a)):
        first, rest = halves(ts)
        assert one.receiver.process(first).samples == 0
        assert other.receiver.process(rest).samples == 1
        assert whole_with_both(ts)
    assert [ts for _device, ts in a.stored + b.stored].count(T0) == 1
