"""Escalation: an incident nobody answered climbs its chat's chain, one step at a time.

Each chat (or forum topic) may set a chain (/escalate 10m oncall, 20m dm oncall, 40m @carol, 60m -100123). An
open incident whose alert went there by its subscriptions, and that nobody answered (no button pressed: 👀, ✅, ❌
and 🔕 all count), takes step k once `after` has passed since it opened: a reply that mentions who is called, a
direct message with the alert and its buttons, or the alert in another chat. A recovery, an answer or a snooze
stops the chain; a step that falls while the machine is muted is skipped. Every step taken is a row (once only,
whichever process, however many restarts), a line on the incident's alert and an event in its history.

A storm escalates as one message per chat: every incident of a chat at the same step is called in one reply,
and an incident whose step is due within ALERT_GROUP_SECONDS joins those taken now. Alerts sent to a person or
another chat group there as alerts always do.

Runs in the watch's transaction; blocks on the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.db import Incident, incidents, muting, oncall
from bot.pipeline.lifecycle import Incidents
from schema.conditions import Severity
from schema.domain import Muting, NoticeKind, State
from schema.oncall import Step, StepKind, on_call

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Callee:
    """Who a step calls: a Telegram user and their name as the chat knows it."""

    user: int
    name: str


# The reply that calls someone (None: nobody is on call) about these incidents, unanswered for so long; `note`
# says why it is a mention when a direct message was asked for.
Call = Callable[[list[Incident], Callee | None, float, str], str]


class NoDm:
    """Why a direct message cannot be sent, said in the chat instead."""

    NOBODY = "nobody is on call now (/oncall)"

    @staticmethod
    def not_started(name: str) -> str:
        return f"I cannot message {name} directly: they have not started me in a private chat"


class Escalator:
    def __init__(self, incidents: Incidents, call: Call) -> None:
        self.incidents = incidents
        self.rules = incidents.rules
        self.call = call

    def run(self, now: float) -> int:
        """Take every step that is due, in every chat with a chain; how many incidents climbed a step."""
        chains = oncall.chains()
        if not chains:
            return 0
        muted = muting(now, self.rules.tz)
        chains = {where: steps for where, steps in chains.items() if where[0] in self.rules.route.chat_ids}
        waiting = {where: oncall.unanswered(*where) for where in chains}
        # Read again to be changed, all at once (an incident may wait in two chats): see incidents.for_update.
        fresh = incidents.locked({i.id for group in waiting.values() for i in group})
        climbed = 0
        for (chat_id, thread_id), steps in chains.items():
            candidates = [fresh[i.id] for i in waiting[(chat_id, thread_id)]
                          if fresh[i.id].state == State.OPEN and fresh[i.id].acted is None]
            due = self._due(candidates, chat_id, thread_id, steps, muted, now)
            for index, group in sorted(due.items()):
                self._take(steps[index], group, chat_id, thread_id, now)
                climbed += len(group)
        return climbed

    def _due(self, candidates: list[Incident], chat_id: int, thread_id: int | None, steps: list[Step],
             muted: Muting, now: float) -> dict[int, list[Incident]]:
        """The incidents of one chat's topic that take a step now, by step; the steps are marked taken (or
        skipped: while muted, or passed over when a later one was due at once, after a restart)."""
        waiting = [i for i in candidates if i.detail.severity != Severity.INFO]
        taken = oncall.steps_taken([i.id for i in waiting], chat_id, thread_id)

        def due_steps(incident: Incident, early: float) -> list[int]:
            waited = now - incident.created + early
            return [k for k, step in enumerate(steps) if step.after_s <= waited and k not in taken.get(incident.id, ())]

        # When any step is due, those due within the grouping window go along: a storm is one message.
        early = self.rules.route.group_s if any(due_steps(i, 0.0) for i in waiting) else 0.0
        due: dict[int, list[Incident]] = {}
        for incident in waiting:
            ks = due_steps(incident, early)
            if not ks:
                continue
            top, is_muted = max(ks), incident.device in muted
            if not oncall.take_step(incident.id, chat_id, thread_id, top, now, skipped=is_muted):
                continue  # taken by another process a moment ago
            for k in ks[:-1]:
                oncall.take_step(incident.id, chat_id, thread_id, k, now, skipped=True)
            if not is_muted:
                due.setdefault(top, []).append(incident)
        return due

    def _take(self, step: Step, group: list[Incident], chat_id: int, thread_id: int | None, now: float) -> None:
        """One step for these incidents of one chat's topic: one reply that calls someone, or their alerts sent
        to a person or another chat."""
        if step.kind == StepKind.CHAT:
            if step.chat_id not in self.rules.route.chat_ids:
                log.warning("escalation to chat %s skipped: it is not in ALLOWED_CHAT_IDS", step.chat_id)
                return
            for incident in group:
                self.incidents.send(incident, step.chat_id, step.thread_id, NoticeKind.ALERT, None, now)
                self.incidents.escalated(incident, f"chat {step.chat_id}" + (
                    f" topic {step.thread_id}" if step.thread_id else ""), step.chat_id, now)
            return
        callee = self._callee(step, chat_id, now)
        note = ""
        if step.kind == StepKind.DM:
            if callee is None:
                note = NoDm.NOBODY
            elif callee.user not in oncall.reachable([callee.user]):
                note = NoDm.not_started(callee.name)
            else:
                for incident in group:
                    self.incidents.send(incident, callee.user, None, NoticeKind.ALERT, None, now)
                    self.incidents.escalated(incident, f"{callee.name} (direct message)", callee.user, now)
                return
        text = self.call(group, callee, now - min(i.created for i in group), note)
        self.incidents.send(group[0], chat_id, thread_id, NoticeKind.REPLY, text, now)
        for incident in group:
            self.incidents.escalated(incident, callee.name if callee else "nobody on call", chat_id, now)

    def _callee(self, step: Step, chat_id: int, now: float) -> Callee | None:
        if not step.on_call:
            return Callee(step.user or 0, step.name)
        shift = on_call(oncall.shifts(chat_id), now, self.rules.tz)
        return Callee(shift.user, shift.name) if shift else None

