"""The callback data of every button: built and parsed here and nowhere else.

Telegram hands callback data back as any client sent it, so a parser accepts only what a builder here makes:
anything else is None, and the handler says the button is not valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from schema.domain import Action

# The prefixes the application routes on (bot/app.py); each parser below checks the whole string.
INCIDENT_PATTERN = r"^i:"
MISSED_PATTERN = r"^missed:"
ACTIVATE_PATTERN = r"^activate:"
EXPAND_PATTERN = r"^one:"
GROUP_PATTERN = r"^all:"
CANCEL = "cancel"
CANCEL_PATTERN = rf"^{CANCEL}$"
# The buttons of an alert, which an escalation may send to someone's private chat: the only ones pressed there.
IN_PRIVATE = re.compile("|".join((INCIDENT_PATTERN, EXPAND_PATTERN, GROUP_PATTERN)))
_INCIDENT_RE = re.compile(rf"i:(\d{{1,18}}):({'|'.join(re.escape(a.value) for a in Action)})")
# A sample's id and time (its repr: what round-trips), or its id alone (buttons sent before they carried the time).
_MISSED_RE = re.compile(r"missed:(\d{1,18})(?::(\d{1,11}\.\d{1,9}))?:([A-Za-z0-9_-]{11})")
_ACTIVATE_RE = re.compile(r"activate:(disk:)?(\d{1,9})")
_EXPAND_RE = re.compile(r"one:(\d{1,18})")
_GROUP_RE = re.compile(r"all:(\d{1,18})")


def incident(incident_id: int, action: Action) -> str:
    """A button on an incident's message."""
    return f"i:{incident_id}:{action.value}"


def parse_incident(data: str | None) -> tuple[int, Action] | None:
    """(incident id, action) of an incident button, or None when the data is not one."""
    match = _INCIDENT_RE.fullmatch(data or "")
    return (int(match[1]), Action(match[2])) if match else None


def _mac(data: str, chat_id: int, key: bytes) -> str:
    """11 characters of an HMAC of the data for one chat: a button only the bot can have made, for that chat."""
    mac = hmac.new(key, f"{chat_id}:{data}".encode(), hashlib.sha256).digest()[:8]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def missed(metric_id: int, ts: float, chat_id: int, key: bytes) -> str:
    """⚠️ Something is wrong here, under /status <device>: about one sample, by its id and time (the time finds its
    day's partition), signed for the chat it is shown in (a stored sample is no secret: without the signature, any
    id could be labelled from any chat). At most 59 characters: Telegram takes 64."""
    data = f"missed:{metric_id}:{ts!r}"
    if not _MISSED_RE.fullmatch(f"{data}:{'A' * 11}"):  # a time no clock gives (before 2001): the id alone
        data = f"missed:{metric_id}"
    return f"{data}:{_mac(data, chat_id, key)}"


def parse_missed(data: str | None, chat_id: int, key: bytes) -> tuple[int, float | None] | None:
    """(sample id, its time or None on an older button), or None when the data is not a valid button."""
    match = _MISSED_RE.fullmatch(data or "")
    if not match:
        return None
    signed = f"missed:{match[1]}" + (f":{match[2]}" if match[2] else "")
    if not hmac.compare_digest(match[3], _mac(signed, chat_id, key)):
        return None
    return int(match[1]), float(match[2]) if match[2] else None


def activate(version: int, disk: bool = False) -> str:
    """Activate (or roll back to) a version of the machine model, or of the disk model."""
    return f"activate:{'disk:' if disk else ''}{version}"


def parse_activate(data: str | None) -> tuple[bool, int] | None:
    """(of the disk model, version) of an activate button, or None."""
    match = _ACTIVATE_RE.fullmatch(data or "")
    return (bool(match[1]), int(match[2])) if match else None


def expand(incident_id: int) -> str:
    """A machine's button on a group message: send that machine's own alert."""
    return f"one:{incident_id}"


def parse_expand(data: str | None) -> int | None:
    match = _EXPAND_RE.fullmatch(data or "")
    return int(match[1]) if match else None


def group(group_id: int) -> str:
    """Every member of a group message, when it names only the first ones."""
    return f"all:{group_id}"


def parse_group(data: str | None) -> int | None:
    match = _GROUP_RE.fullmatch(data or "")
    return int(match[1]) if match else None
