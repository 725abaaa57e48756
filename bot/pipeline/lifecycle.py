"""Writing incidents: open one, resolve one, remind of one, and queue its messages in the outbox.

Called by what one batch decides (bot/pipeline/decide.py) and by the periodic watch (bot/pipeline/watch.py),
inside their transactions. The words of a reply come from the callback `say` the pipeline is handed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, tzinfo

from bot.db import Incident, StoredSample, events, incidents, outbox
from schema.domain import IncidentDetail, Kind, NoticeKind, Reply, State
from schema.oncall import Dependency

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
    tz: tzinfo = UTC  # BOT_TIMEZONE: where maintenance windows and on-call shifts are read
    dependencies: tuple[Dependency, ...] = ()  # DEPENDENCIES, besides those set with /depends

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

    def _notify(self, incident: Incident, kind: NoticeKind, change: str, text: str | None, now: float,
                delay: float = 0.0) -> None:
        self._queued |= outbox.notify(incident, kind, text, change, now, self.rules.route, delay)

    def open(self, device: str, kind: Kind, sample: StoredSample | None, opened_ts: float, detail: IncidentDetail,
             now: float, remind: bool = True) -> Incident:
        """A new incident and its alert; reminded of while nobody acknowledges it, unless not to `remind`. A
        machine's silence behind a parent that is down (`detail.parent`) sends nothing: its parent's alert names
        it (`adopt`) until it is `release`d."""
        quiet = bool(detail.parent)
        incident = incidents.create(
            device, kind, sample.id if sample else None, sample.p_stressed if sample else None, opened_ts, detail, now,
            now + self.rules.repeat_s if self.rules.repeat_s and remind and not quiet else None,
        )
        if not quiet:
            self._notify(incident, NoticeKind.ALERT, kind, None, now)
        events.happened(incident.id, now, "opened", f"{kind} at {opened_ts:.0f}")
        log.info("incident %d opened: %s %s", incident.id, device, kind)
        return incident

    def resolve(self, incident: Incident, resolved_ts: float, reply: Reply | None, now: float) -> None:
        """Close an incident; its messages are edited to say so, and `reply` (if any) notifies the chats.

        A parent's reply names the machines behind it still silent, and waits up to ALERT_GROUP_SECONDS for them:
        they come back a moment after it, and each that does is taken off the reply before it goes."""
        incident.state, incident.resolved_ts, incident.updated = State.RESOLVED, resolved_ts, now
        incident.revision += 1
        if incident.detail.behind:
            still = incidents.still_behind(incident.id)
            incident.detail = replace(incident.detail, still_silent=[d for d in incident.detail.behind if d in still])
        incident.save()
        if incident.detail.parent and not incident.detail.released:
            reply = None  # it said nothing when it went silent: its parent's messages spoke for it
            self._back_behind(incident, now)
        if reply is not None:
            wait = self.rules.route.group_s if incident.detail.still_silent else 0.0
            self._notify(incident, NoticeKind.REPLY, reply, self.say(reply, incident, now), now, wait)
        events.happened(incident.id, now, "resolved", str(reply or ""))
        log.info("incident %d %s: %s %s", incident.id, incident.state, incident.device, incident.kind)

    def _back_behind(self, child: Incident, now: float) -> None:
        """A machine behind a parent that came back reports again: its parent's reply, if not sent yet, no longer
        names it, and goes at once when it named no other."""
        parent = incidents.locked([child.detail.parent_id]).get(child.detail.parent_id)
        if parent is None or parent.state == State.OPEN or child.device not in parent.detail.still_silent:
            return
        still = [d for d in parent.detail.still_silent if d != child.device]
        parent.detail = replace(parent.detail, still_silent=still)
        parent.save()
        reply = Reply.REPORTING_AGAIN if parent.kind == Kind.SILENT else Reply.RECOVERED
        outbox.rewrite(parent.id, reply, self.say(reply, parent, now), None if still else now)

    def adopt(self, parent: Incident, child: str, now: float) -> None:
        """A machine behind `parent` went silent during its outage: the parent's alert names it (an edit)."""
        parent.detail = replace(parent.detail, behind=[*parent.detail.behind, child])
        parent.revision += 1
        parent.updated = now
        parent.save()

    def release(self, child: Incident, now: float) -> None:
        """A machine still silent well after its parent came back: a problem of its own, with its own alert."""
        child.detail = replace(child.detail, released=True)
        child.revision += 1
        child.updated = now
        child.next_reminder = now + self.rules.repeat_s if self.rules.repeat_s else None
        child.save()
        self._notify(child, NoticeKind.ALERT, Kind.SILENT, None, now)
        events.happened(child.id, now, "released", f"still silent after {child.detail.parent} came back")
        log.info("incident %d (%s) is its own now: still silent after %s came back", child.id, child.device,
                 child.detail.parent)

    def escalated(self, incident: Incident, to: str, chat_id: int | None, now: float) -> None:
        """An escalation step was taken: written on the incident (its alert shows it) and in its history."""
        incident.detail = replace(incident.detail, escalated=[*incident.detail.escalated, [now, to]])
        incident.revision += 1
        incident.updated = now
        incident.save()
        events.happened(incident.id, now, "escalated", f"escalated to {to}", chat_id)

    def send(self, incident: Incident, chat_id: int, thread_id: int | None, kind: NoticeKind, text: str | None,
             now: float) -> None:
        """An escalation's message: the alert to another chat or a person, or a reply that calls someone."""
        self._queued |= outbox.escalate(incident, chat_id, thread_id, kind, text, now, self.rules.route)

    def remind(self, incident: Incident, now: float) -> None:
        """A reminder (a reply) of an open incident nobody acknowledged; the next one after repeat_s."""
        self._notify(incident, NoticeKind.REPLY, Reply.REMINDER, self.say(Reply.REMINDER, incident, now), now)
        events.happened(incident.id, now, "reminded")
        incident.next_reminder = now + self.rules.repeat_s
        incident.save()
