"""/status for a fleet of any size: the worst machines first, counts per state, one message; human durations."""

from __future__ import annotations

import re

import pytest

from bot.chat import formatting, status
from bot.db import StoredSample
from tests.fakes.samples import stored

NOW = 1764226800.0
LIMIT = 4096


def machine(device: str, seen_ago: float = 10, p: float | None = 0.1) -> StoredSample:
    return stored(device, NOW - seen_ago, p, 1 if p is not None else None, 1, cpu_percent=10.0)


def table_devices(text: str) -> list[str]:
    """The device column of the <pre> table, in order, without its header."""
    table = re.search(r"<pre>(.*)</pre>", text, re.S)
    assert table is not None
    return [line.split()[0] for line in table[1].splitlines()[1:]]


def test_one_machine_is_one_machine() -> None:
    text = status.overview([machine("pc1", p=0.2)], 0.7, now=NOW)

    assert text.splitlines()[0] == "<b>Fleet: 1 machine</b> — 1 normal"
    assert table_devices(text) == ["pc1"]
    assert "more" not in text


def test_two_machines_are_counted_and_the_stressed_one_comes_first() -> None:
    text = status.overview([machine("alpha", p=0.2), machine("bravo", p=0.91)], 0.7, now=NOW)

    assert text.splitlines()[0] == "<b>Fleet: 2 machines</b> — 1 stressed, 1 normal"
    assert table_devices(text) == ["bravo", "alpha"]


def test_the_order_is_stressed_silent_muted_then_by_probability_with_no_prediction_last() -> None:
    fleet = [
        machine("calm", p=0.05), machine("unscored", p=None), machine("busy", p=0.6),
        machine("gone", seen_ago=3600, p=0.1), machine("burning", p=0.99), machine("hot", p=0.75),
        machine("gone-hot", seen_ago=7200, p=0.8),
    ]

    text = status.overview(fleet, 0.7, now=NOW, silent={"gone", "gone-hot"}, muted={"busy"})

    assert table_devices(text) == ["burning", "hot", "gone-hot", "gone", "busy", "calm", "unscored"]
    assert text.splitlines()[0] == "<b>Fleet: 7 machines</b> — 2 stressed, 2 silent, 1 muted, 1 normal, 1 unknown"
    assert "🔕 muted" in text


def test_a_thousand_machines_fit_one_message_with_the_worst_first_and_the_rest_counted() -> None:
    fleet = [machine(f"server-{i:04d}", p=0.01 + i / 100_000) for i in range(990)]
    fleet += [machine(f"unscored-{i}", p=None) for i in range(5)]
    fleet += [machine(f"hot-{i}", p=0.8 + i / 100) for i in range(3)]
    fleet += [machine(f"gone-{i}", seen_ago=86400 * (i + 1), p=0.1) for i in range(2)]

    text = status.overview(fleet, 0.7, now=NOW, silent={"gone-0", "gone-1"})

    assert len(text) <= LIMIT
    assert text.splitlines()[0] == "<b>Fleet: 1,000 machines</b> — 3 stressed, 2 silent, 990 normal, 5 unknown"
    shown = table_devices(text)
    assert len(shown) == 25
    assert shown[:5] == ["hot-2", "hot-1", "hot-0", "gone-0", "gone-1"]
    assert shown[5:] == [f"server-{i:04d}" for i in range(989, 969, -1)], "then the most likely to be stressed"
    assert text.splitlines()[-1] == "… and 975 more: 970 normal, 5 unknown"


def test_silent_machines_show_how_long_ago_they_were_seen_in_days_and_hours() -> None:
    text = status.overview([machine("gone", seen_ago=3 * 86400 + 4 * 3600 + 59)], 0.7, now=NOW, silent={"gone"})

    assert "3 d 4 h ago" in text and "silent" in text


@pytest.mark.parametrize(("seconds", "said"), [
    (0, "0 s"), (12.9, "12 s"), (59, "59 s"), (60, "1 min"), (5 * 60 + 42, "5 min"), (3600, "1 h"),
    (2 * 3600 + 5 * 60 + 30, "2 h 5 min"), (86400, "1 d"), (3 * 86400 + 4 * 3600 + 600, "3 d 4 h"),
    (400 * 86400, "400 d"), (-5, "0 s"),
])
def test_durations_are_said_in_at_most_two_units(seconds: float, said: str) -> None:
    assert formatting.ago(seconds) == said


@pytest.mark.parametrize(("seconds", "said"), [
    (37, "37 s"), (115, "1 min 55 s"), (120, "2 min"), (23 * 60 + 5, "23 min 5 s"), (3600 + 59, "1 h"),
])
def test_how_long_something_lasted_is_said_to_the_second_under_an_hour(seconds: float, said: str) -> None:
    assert formatting.lasted(seconds) == said


@pytest.mark.parametrize(("count", "said"), [(0, "0 machines"), (1, "1 machine"), (2, "2 machines"),
                                             (1000, "1,000 machines")])
def test_plurals(count: int, said: str) -> None:
    assert formatting.plural(count, "machine") == said
