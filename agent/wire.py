"""Wire format v1 of a metrics message: building it (agent) and validating it (bot).

Kafka key: the device id. Value: one JSON object
``{"v": 1, "device": "pc1", "ts": 1764226800.25, "metrics": {"cpu_percent": 37.5}}``, and optionally
``"filesystems": {"/": 41.2, "/data": 99.4}`` (percent used by mount point; ``disk_percent`` is the fullest) and
``"processes": {"cpu": [["java", 4121, 61.0]], "memory": [["java", 4121, 38.5]]}`` (the top few by each, as
name, pid, percent: of one CPU for "cpu", as top shows it, so a busy process on many CPUs passes 100; of the
machine's memory for "memory"), and ``"readings": {"md_failed": {"md0": [1, "sdb"]}, "unit_failed": {}}`` (what the
machine's objects read, by reading name and object, a value or a value with a note: agent/vocabulary.py's
READINGS; a reading present is whole, an object missing from it has none of it) and ``"unreadable": {"systemd": "no
systemd here"}`` (what the sender could not read, and why). Messages without them stay valid.
Every way a message can be wrong raises :class:`WireError` with a reason an operator can read, and
nothing else: whatever a sender puts in a message, :func:`parse` either returns a :class:`Sample` the
store can hold or raises :class:`WireError`.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from agent.vocabulary import BELOW_LIMIT, BOUNDS, DEVICE_RE, KNOWN_METRICS, READINGS

try:
    import orjson
except ImportError:  # the agent alone only builds messages (stdlib json); validating them is the bot's job
    orjson = None

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
MAX_METRICS = 64
MAX_NAME = 64
UNKNOWN_BOUNDS = (-BELOW_LIMIT, BELOW_LIMIT)
# Between 2000-01-01 and 2100-01-01: any other time is a clock or unit error (ms instead of s).
TS_FROM, TS_TO = 946684800.0, 4102444800.0
# A receiver (the bot) also refuses a sample from further ahead of its own clock than this: the sender's clock
# is wrong, and taken as the device's newest sample it would hide every real one that follows.
MAX_AHEAD_S = 900.0
# Filesystems and top processes: bounded, as they are stored with every sample and shown to people.
MAX_FILESYSTEMS = 32
MAX_MOUNT_POINT = 256
PROCESS_KINDS = ("cpu", "memory")
MAX_PROCESSES = 3  # of each kind
MAX_PROCESS_NAME = 64
MAX_PID = 2**32 - 1
MAX_READINGS = 64  # reading names (and unreadable sources) in one message
MAX_READING_OBJECTS = 64  # of one reading: filesystems, units, interfaces, …
MAX_OBJECT_NAME = 256
MAX_NOTE = 200
MAX_PROCESS_CPU = 100.0 * 1024  # percent of one CPU: a process may use every CPU of a machine of 1,024
_USUAL_KEYS = 4  # v, device, ts, metrics: a message with more may carry filesystems or processes
# orjson stops at these as at any invalid value; the operator should read what they are.
_NON_FINITE = ("NaN", "Infinity")


class WireError(ValueError):
    """A message that does not follow wire format v1; the text is the reason."""


@dataclass(slots=True)  # not frozen: one is made per message (docs/performance.md, the hot path)
class Sample:
    device: str
    ts: float
    metrics: dict[str, float]
    # The values of KNOWN_METRICS in that order, None where the sample has none, when parse had them at hand
    # (only for a sample of known metrics alone): the bot's store and model read them, and would otherwise
    # look each one up again in `metrics`.
    known: tuple[float | None, ...] | None = field(default=None, compare=False, repr=False)
    filesystems: dict[str, float] | None = None  # percent used by mount point
    processes: dict[str, list[tuple[str, int, float]]] | None = None  # "cpu"/"memory" -> top (name, pid, percent)
    readings: dict[str, dict[str, float]] | None = None  # reading -> object -> value (READINGS)
    notes: dict[str, dict[str, str]] | None = None  # reading -> object -> what a value alone cannot say ("sdb")
    unreadable: dict[str, str] | None = None  # source (SOURCES) -> why the sender could not read it


def encode(device: str, ts: float, metrics: dict[str, float], filesystems: dict[str, float] | None = None,
           processes: dict[str, list[tuple[str, int, float]]] | None = None,
           readings: dict[str, dict[str, float]] | None = None, notes: dict[str, dict[str, str]] | None = None,
           unreadable: dict[str, str] | None = None) -> bytes:
    """The message value for one sample."""
    doc: dict[str, object] = {"v": VERSION, "device": device, "ts": round(ts, 3), "metrics": metrics}
    if filesystems:
        doc["filesystems"] = filesystems
    if processes:
        doc["processes"] = processes
    if readings is not None:
        noted = notes or {}
        doc["readings"] = {name: {obj: [value, noted[name][obj]] if obj in noted.get(name, {}) else value
                                  for obj, value in objects.items()} for name, objects in readings.items()}
    if unreadable:
        doc["unreadable"] = unreadable
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _parse_ts(ts: object, now: float | None) -> float:
    if type(ts) not in (int, float, str):  # bool is an int subclass: True is not a time
        raise WireError("ts must be Unix seconds or an ISO-8601 string with a UTC offset")
    if isinstance(ts, str):
        try:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise WireError(f"ts {ts[:40]!r} is not an ISO-8601 time") from None
        if when.tzinfo is None:
            raise WireError("ts has no UTC offset")
        try:
            value = when.timestamp()
        except (OverflowError, ValueError):  # year 1 or 9999 shifted by its offset out of datetime's range
            raise WireError("ts is out of range (expected Unix seconds between 2000 and 2100)") from None
    else:
        value = float(ts)
    if not (TS_FROM <= value < TS_TO):
        raise WireError("ts is out of range (expected Unix seconds between 2000 and 2100)")
    if now is not None and value > now + MAX_AHEAD_S:
        ahead = value - now
        shown = (f"{ahead / 86400:.0f} d" if ahead >= 86400 else f"{ahead / 3600:.0f} h" if ahead >= 3600
                 else f"{ahead / 60:.0f} min")
        raise WireError(f"ts is {shown} ahead of the receiver's clock (at most {MAX_AHEAD_S / 60:.0f} min): "
                        "the sender's clock is wrong")
    return value


def _not_json(exc: orjson.JSONDecodeError) -> WireError:
    """What is wrong with a value orjson refused: it refuses NaN, infinities, numbers beyond a float, lone
    surrogates and nesting deeper than 1024, each with a message that says where."""
    if exc.doc[exc.pos:exc.pos + 8].startswith(_NON_FINITE):
        return WireError(f"not JSON: the value at char {exc.pos} is not a finite number")
    if exc.msg.startswith("number is infinity"):
        return WireError(f"not JSON: the number at char {exc.pos} is too large for a float, not a finite number")
    return WireError(f"not JSON: {exc}")


def _shown(value: object) -> str:
    """A sender's value, short and safe to put in a reason (a nested one is only named)."""
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    return orjson.dumps(value).decode()[:20]


def _out_of_range(name: str, value: float, low: float, high: float) -> WireError:
    if high == BELOW_LIMIT:
        expected = "from 0 to below 1e15" if low == 0.0 else "of magnitude below 1e15"
    else:
        expected = f"from {low:g} to {high:g}"
    return WireError(f"metric {name!r} is {value:.6g}, out of range (expected {expected})")


def _device(device: object) -> str:
    """A device id not seen before, checked and remembered: parse matches an id only once (a fleet has a few
    thousand)."""
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise WireError("device must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
    if len(_DEVICES_SEEN) >= MAX_DEVICES_SEEN:
        _DEVICES_SEEN.clear()
    _DEVICES_SEEN.add(device)
    return device


MAX_DEVICES_SEEN = 100_000
# What parse needs of each order of known metric names a sender lists; a fleet's agents use one or a few orders.
_ORDERS: dict[tuple[str, ...], _Order] = {}
MAX_NAME_ORDERS = 1000
_FLOAT = {float}
_DEVICES_SEEN: set[str] = set()


def parse(value: bytes | None, key: bytes | None = None, now: float | None = None) -> Sample:
    """Validate one message value (and key, when given) and return its sample; given the receiver's clock
    (`now`), a ts more than MAX_AHEAD_S ahead of it is refused too."""
    if value is None:
        raise WireError("empty message")
    if len(value) > MAX_MESSAGE_BYTES:
        raise WireError(f"message is {len(value)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _not_json(exc) from None
    if type(doc) is not dict:
        raise WireError("not a JSON object")
    version = doc.get("v")
    if type(version) is not int or version != VERSION:  # true == 1 and 1.0 == 1 in Python, not on the wire
        raise WireError(f"unknown version v={_shown(version)} (expected 1)")
    # The checks of every message are written out here for the common case, and the functions named for the
    # others: a call costs as much as the check.
    device = doc.get("device")
    if type(device) is not str or device not in _DEVICES_SEEN:
        device = _device(device)
    if key is not None and key.decode("utf-8", "replace") != device:
        raise WireError("key does not match device")
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict):
        raise WireError("metrics must be an object of names to numbers")
    if len(metrics) > MAX_METRICS:
        raise WireError(f"more than {MAX_METRICS} metrics")
    ts = doc.get("ts")
    if type(ts) is not float or not TS_FROM <= ts < (TS_TO if now is None else now + MAX_AHEAD_S):
        ts = _parse_ts(ts, now)
    if len(doc) > _USUAL_KEYS:  # the hot path looks for nothing more
        readings, notes = _readings(doc.get("readings"))
        return Sample(device, ts, *_metrics(metrics), _filesystems(doc.get("filesystems")),
                      _processes(doc.get("processes")), readings, notes, _unreadable(doc.get("unreadable")))
    return Sample(device, ts, *_metrics(metrics))


def _printable(text: object, limit: int) -> bool:
    """Text people are shown and the store holds: 1 to `limit` characters, none of them a control, format or
    invisible one (nor a lone surrogate, which is not printable either)."""
    return type(text) is str and 0 < len(text) <= limit and text.isprintable()


def _percent(value: object, high: float = 100.0) -> float | None:
    """A number from 0 to `high` as a float, or None (bool is an int subclass: True is not a reading)."""
    kind = type(value)
    if kind is not float and kind is not int:
        return None
    number = float(value)  # orjson gives finite floats and 64-bit ints: this cannot overflow
    return number if 0.0 <= number <= high else None


def _filesystems(value: object) -> dict[str, float] | None:
    """The percent used of each filesystem by mount point, checked; None when the message has none."""
    if value is None:
        return None
    if type(value) is not dict:
        raise WireError("filesystems must be an object of mount points to percent used")
    if len(value) > MAX_FILESYSTEMS:
        raise WireError(f"more than {MAX_FILESYSTEMS} filesystems")
    clean: dict[str, float] = {}
    for mount, used in value.items():
        if not _printable(mount, MAX_MOUNT_POINT):
            raise WireError(f"filesystem mount point {mount[:40]!r} is empty, longer than {MAX_MOUNT_POINT} "
                            "characters or has a control or invisible character")
        percent = _percent(used)
        if percent is None:
            raise WireError(f"filesystem {mount[:40]!r} is {_shown(used)}, not a percent from 0 to 100")
        clean[mount] = percent
    return clean


def _processes(value: object) -> dict[str, list[tuple[str, int, float]]] | None:
    """The top processes by CPU and by memory, checked; None when the message has none."""
    if value is None:
        return None
    if type(value) is not dict or not value.keys() <= set(PROCESS_KINDS):
        raise WireError('processes must be an object with "cpu" and "memory" lists only')
    clean: dict[str, list[tuple[str, int, float]]] = {}
    for kind, entries in value.items():
        if type(entries) is not list or len(entries) > MAX_PROCESSES:
            raise WireError(f"processes {kind!r} must be a list of at most {MAX_PROCESSES} [name, pid, percent]")
        high = MAX_PROCESS_CPU if kind == "cpu" else 100.0
        top = []
        for entry in entries:
            if type(entry) is not list or len(entry) != 3:
                raise WireError(f"a process of {kind!r} must be [name, pid, percent]")
            name, pid, used = entry
            if not _printable(name, MAX_PROCESS_NAME):
                raise WireError(f"a process name of {kind!r} is empty, longer than {MAX_PROCESS_NAME} characters "
                                "or has a control or invisible character")
            if type(pid) is not int or not 0 <= pid <= MAX_PID:
                raise WireError(f"process {name!r} has pid {_shown(pid)}, not a whole number from 0 to {MAX_PID}")
            percent = _percent(used, high)
            if percent is None:
                raise WireError(f"process {name!r} of {kind!r} is {_shown(used)}, not a percent from 0 to {high:g}")
            top.append((name, pid, percent))
        clean[kind] = top
    return clean


def _readings(value: object) -> tuple[dict[str, dict[str, float]] | None, dict[str, dict[str, str]] | None]:
    """The readings of the machine's objects and their notes, checked; (None, None) when the message has none."""
    if value is None:
        return None, None
    if type(value) is not dict or len(value) > MAX_READINGS:
        raise WireError(f"readings must be an object of at most {MAX_READINGS} reading names to objects of values")
    readings: dict[str, dict[str, float]] = {}
    notes: dict[str, dict[str, str]] = {}
    for name, objects in value.items():
        known = READINGS.get(name)
        if known is None:  # a newer sender's: left out, as an unknown metric is left out of the model
            continue
        if type(objects) is not dict or len(objects) > MAX_READING_OBJECTS:
            raise WireError(f"reading {name!r} must be an object of at most {MAX_READING_OBJECTS} objects to values")
        clean: dict[str, float] = {}
        for obj, given in objects.items():
            if obj and not _printable(obj, MAX_OBJECT_NAME):
                raise WireError(f"an object of reading {name!r} is longer than {MAX_OBJECT_NAME} characters or has "
                                "a control or invisible character")
            note = None
            if type(given) is list:
                if len(given) != 2 or not _printable(given[1], MAX_NOTE):
                    raise WireError(f"reading {name!r} of {obj[:40]!r} must be a number or [number, note] with a "
                                    f"note of 1 to {MAX_NOTE} printable characters")
                given, note = given
            number = _percent(given, known.high) if known.low == 0.0 else _finite(given, known.low, known.high)
            if number is None:
                raise WireError(f"reading {name!r} of {obj[:40]!r} is {_shown(given)}, not a number from "
                                f"{known.low:g} to {known.high:g}")
            clean[obj] = number
            if note is not None:
                notes.setdefault(name, {})[obj] = note
        readings[name] = clean
    return readings, notes or None


def _finite(value: object, low: float, high: float) -> float | None:
    """A number from `low` to `high` as a float, or None."""
    if type(value) is not float and type(value) is not int:
        return None
    number = float(value)
    return number if low <= number <= high else None


def _unreadable(value: object) -> dict[str, str] | None:
    """What the sender could not read, by source, with why; None when the message says nothing of it."""
    if value is None:
        return None
    if type(value) is not dict or len(value) > MAX_READINGS:
        raise WireError(f"unreadable must be an object of at most {MAX_READINGS} sources to reasons")
    for source, reason in value.items():
        if not _printable(source, MAX_OBJECT_NAME) or not _printable(reason, MAX_NOTE):
            raise WireError(f"the reason {source!r} is unreadable must be 1 to {MAX_NOTE} printable characters")
    return value


class _Order(NamedTuple):
    """What parse needs of one order of known metric names."""

    lows: tuple[float, ...]  # their bounds, in that order
    highs: tuple[float, ...]
    known: Callable[[tuple[float | None, ...]], tuple[float | None, ...]]  # (*values, None) -> Sample.known


def _order(names: tuple[str, ...]) -> _Order:
    at = [names.index(name) if name in names else len(names) for name in KNOWN_METRICS]  # len: the None after
    return _Order(tuple(BOUNDS[n][0] for n in names), tuple(BOUNDS[n][1] for n in names), operator.itemgetter(*at))


# A message of every known metric (the agent's) is read in the order of KNOWN_METRICS, whatever its own order.
_EVERY_KNOWN = operator.itemgetter(*KNOWN_METRICS)
_LOWS = tuple(BOUNDS[name][0] for name in KNOWN_METRICS)
_HIGHS = tuple(BOUNDS[name][1] for name in KNOWN_METRICS)


def _metrics(metrics: dict) -> tuple[dict[str, float], tuple[float | None, ...] | None]:
    """The metrics as floats, each checked, and their Sample.known when at hand. The bot's hot path: a message
    of known metrics, all floats within their bounds, is checked in a few passes in C; anything else goes
    through the loop that names the fault."""
    if len(metrics) == len(KNOWN_METRICS):
        try:
            known = _EVERY_KNOWN(metrics)
        except KeyError:  # an unknown metric instead of a known one
            pass
        else:  # no bound is above 0 and only one below: min() settles the lower bounds of nearly every sample
            if (set(map(type, known)) == _FLOAT and (min(known) >= 0.0 or all(map(operator.le, _LOWS, known)))
                    and all(map(operator.ge, _HIGHS, known))):
                return metrics, known
    names = tuple(metrics)
    order = _ORDERS.get(names)
    if order is None and metrics.keys() <= BOUNDS.keys():
        if len(_ORDERS) >= MAX_NAME_ORDERS:
            _ORDERS.clear()
        order = _ORDERS[names] = _order(names)
    if order is not None:
        values = tuple(metrics.values())
        if (set(map(type, values)) == _FLOAT and all(map(operator.le, order.lows, values))
                and all(map(operator.ge, order.highs, values))):
            return metrics, order.known((*values, None))  # metrics: a new dict of orjson's, no one else's
    clean: dict[str, float] = {}
    for name, number in metrics.items():
        bounds = BOUNDS.get(name)
        if bounds is None:  # a known name is valid; any other is checked
            if len(name) > MAX_NAME:
                raise WireError(f"metric name {name[:MAX_NAME]!r}… longer than {MAX_NAME} characters")
            # Names are shown to people and stored as text: no control, format or invisible characters.
            if not name or not name.isprintable():
                raise WireError(f"metric name {name!r} is empty or has a control or invisible character")
            bounds = UNKNOWN_BOUNDS
        kind = type(number)
        if kind is not float and kind is not int:  # bool is an int subclass: True is not a reading
            raise WireError(f"metric {name!r} is not a number")
        # orjson gives finite floats and ints that fit in 64 bits, so this conversion cannot overflow.
        value = float(number)
        low, high = bounds
        if not low <= value <= high:
            raise _out_of_range(name, value, low, high)
        clean[name] = value
    return clean, None

