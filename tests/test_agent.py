"""The agent: what it collects, how it is configured, and what reaches a real Kafka broker."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from agent.collect import METRICS, Collector, Metric, TopProcesses, default_device_id
from agent.config import parse_config
from agent.vocabulary import DEVICE_RE, KNOWN_METRICS, NOT_DISK_FS_TYPES
from agent.wire import parse
from tests.fakes import filesystems
from tests.fakes.services import free_port

ROOT = Path(__file__).resolve().parent.parent
PERCENTS = ("cpu_percent", "mem_percent", "swap_percent", "disk_percent")
RATES = ("disk_read_bps", "disk_write_bps", "net_sent_bps", "net_recv_bps")


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `python -m agent` from the repository root with only the given Kafka variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait for an agent that stops by itself; its exit code and output."""
    out, err = proc.communicate(timeout=15)
    return proc.returncode, out, err


def terminate_after(proc: subprocess.Popen[str], seconds: float) -> tuple[int, str, str]:
    """Let the agent run for a while, send SIGTERM, and return its exit code and output."""
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    return finish(proc)


def rates_this_machine_has() -> list[str]:
    """The rate metrics whose counters psutil can read here."""
    names = []
    if psutil.disk_io_counters() is not None:
        names += ["disk_read_bps", "disk_write_bps"]
    if set(psutil.net_io_counters(pernic=True)) - {"lo"}:
        names += ["net_sent_bps", "net_recv_bps"]
    return names


def test_once_prints_one_valid_sample_without_kafka() -> None:
    code, out, err = finish(agent("--once"))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    sample = parse(lines[0].encode())
    assert sample.device == default_device_id()
    for name in ("cpu_percent", "mem_percent"):
        assert 0.0 <= sample.metrics[name] <= 100.0
    assert set(rates_this_machine_has()) <= set(sample.metrics)
    assert set(sample.metrics) <= set(KNOWN_METRICS)
    if not psutil.sensors_temperatures():
        assert "cpu_temp_c" not in sample.metrics
    assert "Traceback" not in err


def test_collector_gives_rates_from_the_second_sample_and_clamps_percentages() -> None:
    collector = Collector()
    first = collector.sample()
    assert not set(RATES) & set(first)
    time.sleep(0.2)
    second = collector.sample()
    for name in rates_this_machine_has():
        assert second[name] >= 0.0
    for sample in (first, second):
        for name in PERCENTS:
            if name in sample:
                assert 0.0 <= sample[name] <= 100.0
        assert all(name in KNOWN_METRICS for name in sample)


def test_collector_leaves_out_a_failing_metric_and_logs_it_once(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> float:
        raise PermissionError("not in a container")

    collector = Collector([Metric("cpu_temp_c", broken), Metric("mem_percent", lambda: 140.0, percent=True)])
    with caplog.at_level(logging.INFO, logger="agent.collect"):
        samples = [collector.sample() for _ in range(3)]
    assert samples == [{"mem_percent": 100.0}] * 3
    assert [r.getMessage() for r in caplog.records if "cpu_temp_c" in r.getMessage()] == [
        "cpu_temp_c is not available on this machine (PermissionError: not in a container); not sending it"
    ]


def test_collector_gives_no_rate_when_a_counter_goes_backwards() -> None:
    readings = iter([1000.0, 3000.0, 10.0, 510.0])
    collector = Collector([Metric("net_recv_bps", lambda: next(readings), rate=True)])
    assert collector.sample() == {}
    time.sleep(0.05)
    assert collector.sample()["net_recv_bps"] > 0
    assert collector.sample() == {}  # the counter was reset: no rate for this sample
    time.sleep(0.05)
    assert collector.sample()["net_recv_bps"] > 0


def _push_through_loopback(nbytes: int) -> None:
    """Send `nbytes` from this machine to itself over TCP on 127.0.0.1."""
    received = 0
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as sender:
        receiver, _ = server.accept()

        def drain() -> None:
            nonlocal received
            with receiver:
                while data := receiver.recv(1 << 20):
                    received += len(data)

        reader = threading.Thread(target=drain)
        reader.start()
        chunk = b"x" * (1 << 20)
        for _ in range(nbytes // len(chunk)):
            sender.sendall(chunk)
        sender.shutdown(socket.SHUT_WR)
        reader.join(timeout=30)
    assert received == nbytes


def test_network_rates_leave_out_traffic_the_machine_sends_to_itself() -> None:
    names = ("net_sent_bps", "net_recv_bps")
    collector = Collector([m for m in METRICS if m.name in names])
    collector.sample()
    loopback_before = psutil.net_io_counters(pernic=True)["lo"].bytes_recv
    started = time.monotonic()
    pushed = 256 << 20
    _push_through_loopback(pushed)
    rates = collector.sample()
    elapsed = time.monotonic() - started
    assert psutil.net_io_counters(pernic=True)["lo"].bytes_recv - loopback_before >= pushed
    # The machine's real traffic in that moment is far below what it sent itself.
    for name in names:
        assert rates[name] * elapsed < pushed / 4, name


def test_default_device_id_is_a_valid_device_id() -> None:
    assert DEVICE_RE.fullmatch(default_device_id())


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ((), {}, "KAFKA_BOOTSTRAP_SERVERS"),
        (("--interval", "0"), {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}, "--interval"),
        (("--interval", "soon"), {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}, "--interval"),
        (("--device", "pc 1/α"), {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}, "--device"),
        ((), {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "KAFKA_TOPIC": "no spaces"}, "KAFKA_TOPIC"),
        (("--once", "--fs-exclude", "nfs,a b"), {}, "--fs-exclude"),
        (("--once",), {"AGENT_FS_INCLUDE": "/da\tta"}, "AGENT_FS_INCLUDE"),
        (("--once", "--procfs", "/no/such/folder"), {}, "--procfs"),
        (("--once",), {"AGENT_ROOTFS": "/etc/passwd"}, "AGENT_ROOTFS"),
        (("--once", "--smart-interval", "-5"), {}, "--smart-interval"),
        (("--once",), {"AGENT_SMART_INTERVAL": "5 min"}, "AGENT_SMART_INTERVAL"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_it(args: tuple[str, ...], env: dict[str, str], named: str) -> None:
    code, out, err = finish(agent(*args, env=env))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert named in err
    assert "Traceback" not in err


def test_config_defaults() -> None:
    config = parse_config([], {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert (config.device, config.interval, config.once) == (default_device_id(), 5.0, False)
    assert (config.bootstrap_servers, config.topic) == ("kafka:9092", "rigwatch.metrics")


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=10)


def _consume(bootstrap: str, topic: str, want: int, timeout: float = 10.0) -> list[tuple[bytes | None, bytes | None]]:
    """Read up to `want` messages from the start of the topic."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-agent-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
    })
    consumer.subscribe([topic])
    messages: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                messages.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return messages


def test_agent_publishes_samples_keyed_by_device_to_kafka(kafka: str) -> None:
    topic = f"rigwatch.test-agent.{uuid.uuid4().hex[:8]}"
    _create_topic(kafka, topic)
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka, "KAFKA_TOPIC": topic}
    proc = agent("--device", "pc-test", "--interval", "0.2", env=env)
    code, _, err = terminate_after(proc, 1.5)
    assert code == 0, err
    assert "samples sent to Kafka" in err
    messages = _consume(kafka, topic, want=3)
    assert len(messages) >= 3
    for key, value in messages:
        assert key == b"pc-test"
        assert parse(value, key).device == "pc-test"


def test_agent_warns_once_while_kafka_is_unreachable_and_still_stops_cleanly() -> None:
    proc = agent("--interval", "0.1", env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    started = time.monotonic()
    code, _, err = terminate_after(proc, 2.0)
    assert code == 0, err
    assert time.monotonic() - started < 6.0
    assert err.count("unreachable") == 1
    assert "not delivered" in err
    assert "Traceback" not in err


FILLED = 60.0  # percent of the loop-mounted filesystem the tests fill


@pytest.fixture
def loop_filesystem(tmp_path: Path) -> Iterator[tuple[str, float]]:
    """A real second filesystem filled to about FILLED %: its mount point and percent used (as df shows it)."""
    with filesystems.loop_filesystem(tmp_path, FILLED) as mounted:
        yield mounted


def test_the_collector_reports_every_real_filesystem_and_the_fullest_as_disk_percent(
    loop_filesystem: tuple[str, float]
) -> None:
    mount, percent = loop_filesystem
    reading = Collector(processes=False).read()
    metrics, filesystems = reading.metrics, reading.filesystems

    assert filesystems[mount] == pytest.approx(percent, abs=0.1)
    assert filesystems[mount] == pytest.approx(FILLED, abs=2)
    assert filesystems["/"] == pytest.approx(psutil.disk_usage("/").percent, abs=1)
    assert metrics["disk_percent"] == max(filesystems.values())
    types = {p.mountpoint: p.fstype for p in psutil.disk_partitions(all=True)}
    assert not {types[m] for m in filesystems} & NOT_DISK_FS_TYPES, "no tmpfs, proc, cgroup, overlay …"
    assert not [m for m in filesystems if m.startswith(("/proc", "/sys", "/dev"))]


def test_the_agent_sends_the_filesystems_and_its_options_include_or_exclude_them(
    loop_filesystem: tuple[str, float], tmp_path: Path
) -> None:
    mount, percent = loop_filesystem
    memory = tmp_path / "scratch"
    memory.mkdir()
    filesystems.run("mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", memory)
    try:
        def once(*args: str, env: dict[str, str] | None = None) -> dict[str, float]:
            code, out, err = finish(agent("--once", *args, env=env))
            assert code == 0, err
            return parse(out.encode()).filesystems or {}

        default = once()
        assert default[mount] == pytest.approx(percent, abs=0.1)
        assert str(memory) not in default, "tmpfs is memory, not a disk"
        assert mount not in once("--fs-exclude", f"nfs,{mount}")
        assert mount not in once(env={"AGENT_FS_EXCLUDE": str(tmp_path)}), "a mount point below an excluded one"
        included = once(env={"AGENT_FS_INCLUDE": str(memory)})
        assert included[str(memory)] == pytest.approx(0, abs=5) and mount in included
        assert str(memory) in once("--fs-include", "tmpfs")
    finally:
        filesystems.run("umount", "-l", memory)


def burners(tmp_path: Path, count: int, hold: int) -> list[subprocess.Popen[bytes]]:
    """`count` processes named `rigwatch-burner` (the name of the file they were started from), each burning a
    CPU and holding `hold` bytes."""
    program = tmp_path / "rigwatch-burner"
    program.symlink_to(sys.executable)
    return [subprocess.Popen([program, "-c", f"block = b'x' * {hold}\nwhile True: pass"]) for _ in range(count)]


def two_passes(top: TopProcesses) -> dict[str, list[tuple[str, int, float]]]:
    time.sleep(1.0)  # their memory is written
    top.read()
    time.sleep(1.0)
    return top.read()


def test_the_agent_names_the_process_that_burns_cpu_and_holds_memory(tmp_path: Path) -> None:
    total = psutil.virtual_memory().total
    hold = min(256 << 20, total // 50)
    (burner,) = started = burners(tmp_path, 1, hold)
    try:
        found = two_passes(TopProcesses(top=10_000))  # every name, so other work on the machine cannot hide it
    finally:
        for process in started:
            process.kill()
            process.wait()
    ((_name, pid, cpu),) = [entry for entry in found["cpu"] if entry[0] == "rigwatch-burner"]
    ((_, _, memory),) = [entry for entry in found["memory"] if entry[0] == "rigwatch-burner"]
    assert pid == burner.pid
    assert cpu >= 20.0, "a busy loop uses most of one CPU (100 % is one CPU, as top shows it)"
    assert memory == pytest.approx(100 * hold / total, rel=0.3, abs=0.15)


def test_processes_of_one_name_are_added_up_under_the_pid_of_the_busiest(tmp_path: Path) -> None:
    total = psutil.virtual_memory().total
    hold = min(64 << 20, total // 200)
    started = burners(tmp_path, 4, hold)
    watched = [psutil.Process(process.pid) for process in started]
    try:
        top = TopProcesses(top=10_000)
        time.sleep(1.0)
        top.read()
        before, then = [sum(p.cpu_times()[:2]) for p in watched], time.monotonic()
        time.sleep(1.0)
        found = top.read()
        after, now = [sum(p.cpu_times()[:2]) for p in watched], time.monotonic()
    finally:
        for process in started:
            process.kill()
            process.wait()
    each = [100 * (b - a) / (now - then) for a, b in zip(before, after, strict=True)]
    ((_, pid, cpu),) = [entry for entry in found["cpu"] if entry[0] == "rigwatch-burner"]
    ((_, _, memory),) = [entry for entry in found["memory"] if entry[0] == "rigwatch-burner"]
    assert pid in {process.pid for process in started}
    assert cpu == pytest.approx(sum(each), rel=0.25) and cpu > 1.5 * max(each)  # all four, not the busiest
    assert memory == pytest.approx(4 * 100 * hold / total, rel=0.3, abs=0.3)


def test_a_sample_carries_three_top_processes_of_each_kind_at_most_busiest_first() -> None:
    collector = Collector([])
    collector.read()
    time.sleep(0.5)
    processes = collector.read().processes
    assert processes["memory"], "some process always holds memory"
    for top in processes.values():
        assert 1 <= len(top) <= 3
        assert [p for _, _, p in top] == sorted((p for _, _, p in top), reverse=True)
