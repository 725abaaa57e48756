"""Wire format v1: whatever a sender puts in a message is either a valid sample or a WireError with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.vocabulary import BOUNDS, KNOWN_METRICS, LIMIT
from agent.wire import MAX_MESSAGE_BYTES, UNKNOWN_BOUNDS, Sample, WireError, encode, parse

TS = 1764226800.25


def doc(**fields: object) -> bytes:
    base: dict[str, object] = {"v": 1, "device": "pc1", "ts": TS, "metrics": {"cpu_percent": 37.5}}
    return json.dumps({**base, **fields}).encode()


def raw(metrics: str = '{"cpu_percent": 1}', ts: str = str(TS), v: str = "1") -> bytes:
    """A message written by hand, for what json.dumps would not write."""
    return f'{{"v": {v}, "device": "pc1", "ts": {ts}, "metrics": {metrics}}}'.encode()


def test_a_valid_message_gives_its_sample() -> None:
    sample = parse(encode("pc1", TS, {"cpu_percent": 37.5, "cpu_temp_c": -5.0, "gpu_percent": 80}), b"pc1")
    assert sample == Sample("pc1", TS, {"cpu_percent": 37.5, "cpu_temp_c": -5.0, "gpu_percent": 80.0})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (raw(metrics='{"cpu_percent": ' + "9" * 400 + "}"), "too large for a float"),
        (raw(ts="9" * 400), "too large for a float"),
        (raw(metrics='{"cpu_percent": 1e400}'), "not a finite number"),
        (raw(metrics='{"cpu_percent": NaN}'), "not a finite number"),
        (raw(metrics='{"cpu_percent": -Infinity}'), "not a finite number"),
        (raw(metrics='{"x": ' + "[" * 5000 + "]" * 5000 + "}"), "depth limit"),
        (b'{"v": 1, "device": "pc1", "pad": ' + b"[" * 3000 + b"]" * 3000 + b"}", "depth limit"),
        (raw(v="true"), "unknown version v=true"),
        (raw(v="1.0"), "unknown version v=1.0"),
        (raw(v="[" * 1000 + "]" * 1000), "unknown version v=a list"),
        (raw(metrics='{"\\udc80": 1}'), "surrogate"),
        (raw(metrics='{"cpu\\u0000": 1}'), "control or invisible character"),
        (raw(metrics='{"cpu\\u202e": 1}'), "control or invisible character"),
        (raw(metrics='{"": 1}'), "empty"),
        (raw(metrics='{"cpu_percent": true}'), "'cpu_percent' is not a number"),
        (raw(ts="false"), "ts must be"),
        (raw(ts='"0001-01-01T00:00:00+23:59"'), "ts is out of range"),
        (b"\xff\xfe not utf-8", "not JSON"),
        (b"", "not JSON"),
        (None, "empty message"),
        (b"[" * (MAX_MESSAGE_BYTES + 1), "more than"),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else None,
)
def test_a_hostile_message_is_refused_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        parse(value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("cpu_percent", 1e200, "from 0 to 100"),
        ("cpu_percent", 100.5, "from 0 to 100"),
        ("mem_percent", -0.1, "from 0 to 100"),
        ("cpu_temp_c", 151, "from -50 to 150"),
        ("cpu_temp_c", -273, "from -50 to 150"),
        ("disk_read_bps", -1, "from 0 to below 1e15"),
        ("process_count", LIMIT, "from 0 to below 1e15"),
        ("gpu_percent", 1e200, "magnitude below 1e15"),
        ("fan_rpm", -LIMIT, "magnitude below 1e15"),
    ],
)
@pytest.mark.parametrize("others", [{}, {metric: 1.0 for metric in KNOWN_METRICS}], ids=["alone", "among all"])
def test_a_metric_out_of_its_bounds_is_refused_and_named(name: str, value: float, expected: str,
                                                         others: dict[str, float]) -> None:
    with pytest.raises(WireError, match=f"metric '{name}' is .*out of range.*{expected}"):
        parse(doc(metrics={**others, name: value}))


def test_the_edges_of_every_bound_are_accepted() -> None:
    edges = {"cpu_percent": 0, "mem_percent": 100, "cpu_temp_c": -50, "disk_write_bps": 999_999_999_999_999,
             "uptime_s": 0, "gpu_temp": -999_999_999_999_999}
    assert parse(doc(metrics=edges)).metrics == {k: float(v) for k, v in edges.items()}


def test_integers_that_fit_a_float_but_not_64_bits_are_read_as_floats() -> None:
    with pytest.raises(WireError, match="out of range"):
        parse(raw(metrics='{"net_sent_bps": 18446744073709551616}'))


# Values a sender could put anywhere: every JSON type, huge and non-finite numbers, any character
# including lone surrogates and control characters.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=70)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
    | st.integers(min_value=10**300, max_value=10**500),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=12,
)
NAMES = st.sampled_from(sorted(KNOWN_METRICS)) | st.from_regex(r"[a-z_]{1,20}", fullmatch=True)
VALID_METRIC = NAMES.flatmap(lambda name: st.tuples(st.just(name), st.floats(*BOUNDS.get(name, UNKNOWN_BOUNDS))))
VALID = st.fixed_dictionaries({
    "v": st.just(1),
    "device": st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    "ts": st.floats(min_value=946684800, max_value=4102444799),
    "metrics": st.lists(VALID_METRIC, max_size=6).map(dict),
})
HOSTILE_METRICS = st.dictionaries(NAMES | ANY_TEXT, st.floats() | st.integers() | JSONISH, min_size=1, max_size=4)
# A valid message with one field (or a few metrics) replaced by anything a sender could write.
SPOILT = st.tuples(VALID, st.sampled_from(["v", "device", "ts", "metrics"]), JSONISH | HOSTILE_METRICS).map(
    lambda spoil: {**spoil[0], spoil[1]: spoil[2]}
)
MESSAGES = VALID | SPOILT | st.dictionaries(ANY_TEXT, JSONISH, max_size=5)
DEEP = st.integers(min_value=1, max_value=3000).map(lambda n: raw(metrics='{"x": ' + "[" * n + "]" * n + "}"))
VALUES = MESSAGES.map(lambda m: json.dumps(m).encode()) | st.binary(max_size=200) | DEEP


def check(value: bytes, key: bytes | None) -> Sample | None:
    """parse must give a sample within the wire format's promises, or a WireError; nothing else."""
    try:
        sample = parse(value, key)
    except WireError as exc:
        assert str(exc)
        return None
    assert 946684800 <= sample.ts < 4102444800
    for name, number in sample.metrics.items():
        assert type(number) is float and abs(number) < LIMIT
        assert name.isprintable() and name.encode("utf-8")
    return sample


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES, key=st.none() | st.binary(max_size=10))
def test_any_value_parses_into_a_sane_sample_or_raises_wire_error(value: bytes, key: bytes | None) -> None:
    check(value, key)


@pytest.mark.parametrize("metrics", [
    {"disk_percent": 99.5, "cpu_percent": 3.0},  # a sender's own order
    {name: 1.0 for name in reversed(KNOWN_METRICS)},
    {"mem_percent": 100.0, "swap_percent": 0.0, "cpu_temp_c": -50.0},  # on their bounds
    {**{name: 100.0 for name in KNOWN_METRICS}, "cpu_temp_c": -50.0, "load_1m": 0.0},
])
def test_a_sample_of_known_float_metrics_knows_them_in_their_order(metrics: dict[str, float]) -> None:
    sample = parse(encode("pc1", TS, metrics))

    assert sample.metrics == metrics
    assert sample.known == tuple(metrics.get(name) for name in KNOWN_METRICS)


@pytest.mark.parametrize("metrics", [{"cpu_percent": 3}, {"cpu_percent": 3.0, "gpu_percent": 80.5}, {}])
def test_other_samples_leave_their_known_metrics_to_be_looked_up(metrics: dict[str, float]) -> None:
    sample = parse(encode("pc1", TS, metrics))

    assert sample.metrics == {name: float(value) for name, value in metrics.items()}
    assert sample.known is None


@pytest.mark.parametrize("ahead", [16 * 60, 3 * 3600, 400 * 86400])
def test_a_receiver_refuses_a_time_well_ahead_of_its_clock_and_says_how_far(ahead: float) -> None:
    now = TS
    shown = {16 * 60: "16 min", 3 * 3600: "3 h", 400 * 86400: "400 d"}[ahead]
    for ts in (now + ahead, datetime.fromtimestamp(now + ahead, UTC).isoformat()):
        with pytest.raises(WireError, match=f"ts is {shown} ahead of the receiver's clock.*clock is wrong"):
            parse(doc(ts=ts), now=now)
        assert parse(doc(ts=ts)).ts == pytest.approx(now + ahead), "the sender itself does not check"


def test_a_clock_a_little_ahead_is_accepted() -> None:
    assert parse(doc(ts=TS + 120.5), now=TS).ts == TS + 120.5


def test_filesystems_and_top_processes_are_read_with_the_sample() -> None:
    value = encode("pc1", TS, {"disk_percent": 99.4, "mem_percent": 98.5},
                   filesystems={"/": 41, "/data": 99.4},
                   processes={"cpu": [("java", 4121, 161.5)], "memory": [("java", 4121, 61.0), ("postgres", 88, 12)]})
    sample = parse(value, b"pc1")

    assert sample.metrics == {"disk_percent": 99.4, "mem_percent": 98.5}
    assert sample.filesystems == {"/": 41.0, "/data": 99.4}
    assert sample.processes == {"cpu": [("java", 4121, 161.5)],
                                "memory": [("java", 4121, 61.0), ("postgres", 88, 12.0)]}


def test_a_message_without_them_has_none_and_unknown_keys_are_still_ignored() -> None:
    assert (parse(doc()).filesystems, parse(doc()).processes) == (None, None)
    sample = parse(doc(note="from a script", filesystems={"/": 10}))
    assert (sample.filesystems, sample.processes) == ({"/": 10.0}, None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"filesystems": [["/", 1]]}, "filesystems must be an object"),
        ({"filesystems": {f"/m{i}": 1 for i in range(33)}}, "more than 32 filesystems"),
        ({"filesystems": {"/" + "x" * 256: 1}}, "longer than 256"),
        ({"filesystems": {"": 1}}, "mount point '' is empty"),
        ({"filesystems": {"/da\nta": 1}}, "control or invisible"),
        ({"filesystems": {"/data": 100.5}}, "'/data' is 100.5, not a percent from 0 to 100"),
        ({"filesystems": {"/data": -1}}, "not a percent"),
        ({"filesystems": {"/data": True}}, "'/data' is true, not a percent"),
        ({"filesystems": {"/data": "99"}}, "not a percent"),
        ({"processes": [["java", 1, 2]]}, "processes must be an object"),
        ({"processes": {"disk": []}}, '"cpu" and "memory" lists only'),
        ({"processes": {"cpu": [["a", 1, 1]] * 4}}, "at most 3"),
        ({"processes": {"cpu": ["java"]}}, r"must be \[name, pid, percent\]"),
        ({"processes": {"cpu": [["java", 1]]}}, r"must be \[name, pid, percent\]"),
        ({"processes": {"cpu": [["", 1, 1]]}}, "process name of 'cpu' is empty"),
        ({"processes": {"cpu": [["x" * 65, 1, 1]]}}, "longer than 64"),
        ({"processes": {"memory": [["ja\u202eva", 1, 1]]}}, "control or invisible"),
        ({"processes": {"cpu": [[4121, "java", 1]]}}, "process name"),
        ({"processes": {"cpu": [["java", -1, 1]]}}, "pid -1, not a whole number"),
        ({"processes": {"cpu": [["java", 1.5, 1]]}}, "pid 1.5"),
        ({"processes": {"cpu": [["java", 2**40, 1]]}}, "not a whole number"),
        ({"processes": {"memory": [["java", 1, 101]]}}, "'memory' is 101, not a percent from 0 to 100"),
        ({"processes": {"cpu": [["java", 1, 1e9]]}}, "not a percent from 0 to 102400"),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else None,
)
def test_bad_filesystems_or_processes_are_refused_with_a_reason(fields: dict, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        parse(doc(**fields))


MOUNTS = st.text(st.characters(exclude_categories=()), max_size=300)
HOSTILE_FILESYSTEMS = st.dictionaries(MOUNTS | st.just("/"), st.floats() | st.integers() | JSONISH, max_size=40)
PROCESS = st.lists(JSONISH | ANY_TEXT | st.integers(), min_size=0, max_size=4) | st.tuples(
    ANY_TEXT, st.integers(min_value=-2, max_value=2**33), st.floats() | st.integers())
HOSTILE_PROCESSES = JSONISH | st.dictionaries(st.sampled_from(["cpu", "memory", "io"]) | ANY_TEXT,
                                             JSONISH | st.lists(PROCESS, max_size=5), max_size=3)
WITH_EXTRAS = st.tuples(VALID, HOSTILE_FILESYSTEMS | JSONISH, HOSTILE_PROCESSES).map(
    lambda m: json.dumps({**m[0], "filesystems": m[1], "processes": m[2]}).encode())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(value=WITH_EXTRAS)
def test_any_filesystems_and_processes_parse_into_bounded_values_or_raise_wire_error(value: bytes) -> None:
    sample = check(value, None)
    if sample is None:
        return
    assert len(sample.filesystems or {}) <= 32
    for mount, used in (sample.filesystems or {}).items():
        assert 0 < len(mount) <= 256 and mount.isprintable() and type(used) is float and 0 <= used <= 100
    assert set(sample.processes or {}) <= {"cpu", "memory"}
    for kind, top in (sample.processes or {}).items():
        assert len(top) <= 3
        for name, pid, used in top:
            assert 0 < len(name) <= 64 and name.isprintable() and type(pid) is int and 0 <= pid < 2**32
            assert type(used) is float and 0 <= used <= (102400 if kind == "cpu" else 100)
