"""Writing incidents: open one, resolve one, remind of one, and queue its messages in the outbox.

Called by what one batch decides (bot/pipeline/decide.py) and by the periodic watch (bot/pipeline/watch.py),
inside their transactions. The words of a reply come from the callback `say` the pipeline is handed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo

from bot.db import Incident, StoredSample, events, incidents, outbox
from schema.domain import IncidentDetail, Kind, NoticeKind, Reply, State

log = logging.getLogger(__name__)
MIN_SILENT_S = 60.0
SILENT_INTERVALS = 3  # a device is silent after this many of its usual intervals without a sample

Say = Callable[[Reply, Incident, float], str]  # the text of a reply to an incident, at a time


@dataclass(frozen=True)
class Rules:
    threshold: float
    hysteresis: float
    recover_samples: int
    repeat_s: float  # a reminder for an unacknowledged incident after this long; 0: none
    silent_after_s: float | None  # None: derived per device from its usual interval
    route: outbox.Route
    tz: tzinfo = UTC  # BOT_TIMEZONE: where maintenance windows are read

    def silent_after(self, interval: float | None) -> float:
        if self.silent_after_s is not None:
            return self.silent_after_s
        return max(MIN_SILENT_S, SILENT_INTERVALS * (interval or 0.0))


class Incidents:
    """Opens, resolves and reminds of incidents and queues their messages; every method blocks on the store."""

    def __init__(self, rules: Rules, say: Say) -> None:
        self.rules = rules
        self.say = say
        self._queued = False  # a message was queued since the last take_queued

    def take_queued(self) -> bool:
        """Whether a message was queued since the last call."""
        queued, self._queued = self._queued, False
        return queued

    def _notify(self, incident: Incident, kind: NoticeKind, change: str, text: str | None, now: float) -> None:
        self._queued |= outbox.notify(incident, kind, text, change, now, self.rules.route)

    def open(self, device: str, kind: Kind, sample: StoredSample | None, opened_ts: float, detail: IncidentDetail,
             now: float, remind: bool = True) -> Incident:
        """A new incident and its alert; reminded of while nobody acknowledges it, unless not to `remind`."""
        incident = incidents.create(
            device, kind, sample.id if sample else None, sample.p_stressed if sample else None, opened_ts, detail, now,
            now + self.rules.repeat_s if self.rules.repeat_s and remind else None,
        )
        self._notify(incident, NoticeKind.ALERT, kind, None, now)
        events.happened(incident.id, now, "opened", f"{kind} at {opened_ts:.0f}")
        log.info("incident %d opened: %s %s", incident.id, device, kind)
        return incident

    def resolve(self, incident: Incident, resolved_ts: float, reply: Reply | None, now: float) -> None:
        """Close an incident; its messages are edited to say so, and `reply` (if any) notifies the chats."""
        incident.state, incident.resolved_ts, incident.updated = State.RESOLVED, resolved_ts, now
        incident.revision += 1
        incident.save()
        if reply is not None:
            self._notify(incident, NoticeKind.REPLY, reply, self.say(reply, incident, now), now)
        events.happened(incident.id, now, "resolved", str(reply or ""))
        log.info("incident %d %s: %s %s", incident.id, incident.state, incident.device, incident.kind)

    def remind(self, incident: Incident, now: float) -> None:
        """A reminder (a reply) of an open incident nobody acknowledged; the next one after repeat_s."""
        self._notify(incident, NoticeKind.REPLY, Reply.REMINDER, self.say(Reply.REMINDER, incident, now), now)
        events.happened(incident.id, now, "reminded")
        incident.next_reminder = now + self.rules.repeat_s
        incident.save()
