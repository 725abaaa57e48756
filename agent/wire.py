"""Wire format v1 of a metrics message: building it (agent) and validating it (bot).

Kafka key: the device id. Value: one JSON object
``{"v": 1, "device": "pc1", "ts": 1764226800.25, "metrics": {"cpu_percent": 37.5}}``.
Every way a message can be wrong raises :class:`WireError` with a reason an operator can read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
DEVICE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

# name -> (label for people, unit); the order is the order in which people see them.
KNOWN_METRICS: dict[str, tuple[str, str]] = {
    "cpu_percent": ("CPU", "%"),
    "cpu_freq_mhz": ("CPU frequency", "MHz"),
    "load_1m": ("Load (1 min, per CPU)", ""),
    "mem_percent": ("Memory", "%"),
    "swap_percent": ("Swap", "%"),
    "disk_percent": ("Disk (root)", "%"),
    "disk_read_bps": ("Disk read", "B/s"),
    "disk_write_bps": ("Disk write", "B/s"),
    "net_sent_bps": ("Network sent", "B/s"),
    "net_recv_bps": ("Network received", "B/s"),
    "cpu_temp_c": ("CPU temperature", "°C"),
    "process_count": ("Processes", ""),
    "uptime_s": ("Uptime", "s"),
}
MAX_METRICS = 64


class WireError(ValueError):
    """A message that does not follow wire format v1; the text is the reason."""


@dataclass(frozen=True)
class Sample:
    device: str
    ts: float
    metrics: dict[str, float]


def encode(device: str, ts: float, metrics: dict[str, float]) -> bytes:
    """The message value for one sample."""
    return json.dumps(
        {"v": VERSION, "device": device, "ts": round(ts, 3), "metrics": metrics},
        separators=(",", ":"),
        allow_nan=False,
    ).encode()


def _reject_constant(name: str) -> float:
    raise WireError(f"{name} is not a finite number")


def _parse_ts(ts: object) -> float:
    if isinstance(ts, bool) or not isinstance(ts, (int, float, str)):
        raise WireError("ts must be Unix seconds or an ISO-8601 string with a UTC offset")
    if isinstance(ts, str):
        try:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise WireError(f"ts {ts[:40]!r} is not an ISO-8601 time") from None
        if when.tzinfo is None:
            raise WireError("ts has no UTC offset")
        value = when.timestamp()
    else:
        value = float(ts)
    # Between 2000-01-01 and 2100-01-01: anything else is a clock or unit error (ms instead of s).
    if not (946684800.0 <= value < 4102444800.0):
        raise WireError("ts is out of range (expected Unix seconds between 2000 and 2100)")
    return value


def parse(value: bytes | None, key: bytes | None = None) -> Sample:
    """Validate one message value (and key, when given) and return its sample."""
    if value is None:
        raise WireError("empty message")
    if len(value) > MAX_MESSAGE_BYTES:
        raise WireError(f"message is {len(value)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        doc = json.loads(value, parse_constant=_reject_constant)
    except WireError:
        raise
    except (UnicodeDecodeError, ValueError):
        raise WireError("not JSON") from None
    if not isinstance(doc, dict):
        raise WireError("not a JSON object")
    if doc.get("v") != VERSION:
        raise WireError(f"unknown version v={str(doc.get('v'))[:20]!r} (expected 1)")
    device = doc.get("device")
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise WireError("device must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
    if key is not None and key.decode("utf-8", "replace") != device:
        raise WireError("key does not match device")
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict):
        raise WireError("metrics must be an object of names to numbers")
    if len(metrics) > MAX_METRICS:
        raise WireError(f"more than {MAX_METRICS} metrics")
    clean: dict[str, float] = {}
    for name, number in metrics.items():
        if len(name) > 64:
            raise WireError("metric name longer than 64 characters")
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise WireError(f"metric {name[:64]!r} is not a number")
        if not math.isfinite(number):
            raise WireError(f"metric {name[:64]!r} is not a finite number")
        clean[name] = float(number)
    return Sample(device=device, ts=_parse_ts(doc.get("ts")), metrics=clean)
