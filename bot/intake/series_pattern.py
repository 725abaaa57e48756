"""Which series of a remote write the receiver (bot/intake/remote_write.py) reads, told from their bytes: a pattern
over a series still encoded, so that the others (nine in ten of node_exporter's) are dropped without being decoded.
"""

from __future__ import annotations

import re

from bot.intake.node_exporter import ONLY_WITH, READERS

NAMED = b"\n\x08__name__\x12"  # a series' first label, `__name__`, as Prometheus encodes it (labels sorted)


def _trie(words: dict[bytes, bytes]) -> bytes:
    """A pattern that matches any of `words` (none a prefix of another), each followed by its own pattern, as a
    tree of their common beginnings: a series is dropped after a few bytes compared, not after trying every name."""
    branches: dict[bytes, dict[bytes, bytes]] = {}
    for word, then in words.items():
        branches.setdefault(word[:1], {})[word[1:]] = then
    alternatives = [re.escape(first) + (rests[b""] if b"" in rests else _trie(rests))
                    for first, rests in branches.items()]
    return alternatives[0] if len(alternatives) == 1 else b"(?:" + b"|".join(alternatives) + b")"


def _label(name: str, value: str) -> bytes:
    """A label as Prometheus encodes it in a series (names and values shorter than 128 bytes)."""
    pair = b"\n" + bytes([len(name)]) + name.encode() + b"\x12" + bytes([len(value)]) + value.encode()
    return b"\n" + bytes([len(pair)]) + pair


def _only_with(name: str, value: str, not_zero: bool) -> bytes:
    """What follows the name of a series read only with this label (and a value not 0: a sample's value, a double,
    is field 1, left out when it is 0 as proto3 leaves out defaults; each byte after the label is searched from
    the end, a greedy `.*` being far cheaper than a lazy one)."""
    return b".*" + re.escape(_label(name, value)) + (rb".*\x09" if not_zero else b"")


# A series to look at: Prometheus sorts labels, so `__name__` comes first and names it; one of the names Rigwatch
# reads (its length byte before it makes the match exact; with the label some are read only with), or a series
# laid out otherwise, which protobuf reads.
MAYBE_READ = re.compile(
    rb"\n.(?:\n\x08__name__\x12"
    + _trie({bytes([len(name)]) + name.encode(): _only_with(*ONLY_WITH[name]) if name in ONLY_WITH else b""
             for name in READERS})
    + rb"|(?!\n\x08__name__\x12))|(?!\n)", re.DOTALL)
