"""The on-call loop's rows: the people the bot has seen, the chats' shifts and escalation chains, the steps taken,
and the dependencies set in the chat."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable

from peewee import IntegrityError

from bot.db.routing import GENERAL
from schema.domain import NoticeKind, State, Window
from schema.oncall import Dependency as Rule
from schema.oncall import Shift, Step
from schema.tables import Chain, Dependency, Escalation, Incident, Notice, OnCall, Person, db

MAX_SHIFTS = 20  # in one chat
MAX_DEPENDENCIES = 500


def seen(chat_id: int, user_id: int, username: str | None, name: str, now: float) -> None:
    """Someone wrote in this chat (or, `chat_id` their own id, started the bot in private)."""
    username = username.lower() if username else None
    updated = Person.update(username=username, name=name[:200], seen=now).where(
        (Person.chat_id == chat_id) & (Person.user_id == user_id)).execute()
    if not updated:
        try:
            with db.atomic():
                Person.create(chat_id=chat_id, user_id=user_id, username=username, name=name[:200], seen=now)
        except IntegrityError:  # another process wrote them a moment ago
            pass


def find(chat_id: int, who: str) -> Person | None:
    """Someone seen in this chat, by "@username" or by user id."""
    which = (Person.user_id == int(who)) if who.isdigit() else (Person.username == who.lstrip("@").lower())
    return Person.select().where((Person.chat_id == chat_id) & which).order_by(Person.seen.desc()).first()


def known(user_id: int, chat_ids: Collection[int]) -> bool:
    """Whether they were seen in one of these chats: only then may they start the bot in private."""
    return Person.select().where((Person.user_id == user_id) & Person.chat_id.in_(list(chat_ids))).exists()


def reachable(user_ids: Iterable[int]) -> set[int]:
    """Those of these people who started the bot in private: a direct message can reach them."""
    ids = list(set(user_ids))
    return {p.user_id for p in Person.select(Person.user_id).where(
        Person.user_id.in_(ids) & (Person.chat_id == Person.user_id))} if ids else set()


def unreachable(user_id: int) -> None:
    """Their private chat refused a message (they blocked the bot): no more direct messages until they start it."""
    Person.delete().where((Person.chat_id == user_id) & (Person.user_id == user_id)).execute()


def shifts(chat_id: int) -> list[Shift]:
    """A chat's shifts, in the order they were set (the first whose window holds is on call)."""
    rows = OnCall.select().where(OnCall.chat_id == chat_id).order_by(OnCall.id)
    return [Shift(r.user_id, r.user_name, None if r.other else Window(r.days, r.start, r.end)) for r in rows]


def add_shift(chat_id: int, shift: Shift, set_by: str) -> None:
    """Put someone on call; raises ValueError past MAX_SHIFTS. The same person in the same window (or "other")
    is replaced, not doubled."""
    window = shift.window
    same = (OnCall.chat_id == chat_id) & (OnCall.user_id == shift.user)
    same &= OnCall.other if window is None else (
        (OnCall.days == window.days) & (OnCall.start == window.start) & (OnCall.end == window.end) & ~OnCall.other)
    with db.atomic():
        OnCall.delete().where(same).execute()
        if OnCall.select().where(OnCall.chat_id == chat_id).count() >= MAX_SHIFTS:
            raise ValueError(f"a chat has at most {MAX_SHIFTS} shifts")
        days, start, end = (window.days, window.start, window.end) if window else (0, 0, 0)
        OnCall.create(chat_id=chat_id, user_id=shift.user, user_name=shift.name[:200], days=days, start=start, end=end,
                      other=window is None, set_by=set_by[:200], created=time.time())


def remove_shifts(chat_id: int, user_id: int | None) -> int:
    """Take someone (None: everyone) off this chat's roster; how many shifts that ended."""
    which = OnCall.chat_id == chat_id
    if user_id is not None:
        which &= OnCall.user_id == user_id
    return OnCall.delete().where(which).execute()


def chain(chat_id: int, thread_id: int | None) -> list[Step]:
    """The escalation steps of a chat's topic; [] when none is set."""
    row = Chain.get_or_none((Chain.chat_id == chat_id) & (Chain.thread_id == (thread_id or GENERAL)))
    return [Step.from_json(s) for s in json.loads(row.steps)] if row else []


def chains() -> dict[tuple[int, int | None], list[Step]]:
    """Every chain, by (chat, topic or None)."""
    return {(row.chat_id, row.thread_id or None): [Step.from_json(s) for s in json.loads(row.steps)]
            for row in Chain.select()}


def set_chain(chat_id: int, thread_id: int | None, steps: list[Step], set_by: str) -> None:
    with db.atomic():
        Chain.delete().where((Chain.chat_id == chat_id) & (Chain.thread_id == (thread_id or GENERAL))).execute()
        Chain.create(chat_id=chat_id, thread_id=thread_id or GENERAL, steps=json.dumps([s.to_json() for s in steps]),
                     set_by=set_by[:200], created=time.time())


def remove_chain(chat_id: int, thread_id: int | None) -> bool:
    return bool(Chain.delete().where((Chain.chat_id == chat_id) & (Chain.thread_id == (thread_id or GENERAL)))
                .execute())


def unanswered(chat_id: int, thread_id: int | None) -> list[Incident]:
    """The open incidents nobody answered whose alert went to this chat's topic by its subscriptions (not by an
    escalation), oldest first."""
    thread = Notice.thread_id.is_null() if thread_id is None else Notice.thread_id == thread_id
    return list(Incident.select().join(Notice).where(
        (Notice.chat_id == chat_id) & thread & (Notice.kind == NoticeKind.ALERT) & ~Notice.escalated
        & (Incident.state == State.OPEN) & Incident.acted.is_null()).order_by(Incident.created))


def steps_taken(incident_ids: list[int], chat_id: int, thread_id: int | None) -> dict[int, set[int]]:
    """The steps of a chat's chain already taken (or skipped) for each of these incidents."""
    taken: dict[int, set[int]] = {}
    if incident_ids:
        for row in Escalation.select(Escalation.incident, Escalation.step).where(
                Escalation.incident.in_(incident_ids) & (Escalation.chat_id == chat_id)
                & (Escalation.thread_id == (thread_id or GENERAL))):
            taken.setdefault(row.incident_id, set()).add(row.step)
    return taken


def take_step(incident_id: int, chat_id: int, thread_id: int | None, step: int, now: float, skipped: bool) -> bool:
    """Mark a step taken for an incident; False when it already was (by another process, before a restart)."""
    try:
        with db.atomic():
            Escalation.create(incident=incident_id, chat_id=chat_id, thread_id=thread_id or GENERAL, step=step,
                              at=now, skipped=skipped)
    except IntegrityError:
        return False
    return True


def dependencies() -> list[Rule]:
    """The dependencies set in the chat, by pattern."""
    return [Rule(row.pattern, row.parent) for row in Dependency.select().order_by(Dependency.pattern)]


def depend(pattern: str, parent: str, user_name: str) -> None:
    """Machines matching `pattern` stand behind `parent` (replacing an earlier parent of that pattern); raises
    ValueError past MAX_DEPENDENCIES."""
    with db.atomic():
        Dependency.delete().where(Dependency.pattern == pattern).execute()
        if Dependency.select().count() >= MAX_DEPENDENCIES:
            raise ValueError(f"at most {MAX_DEPENDENCIES} dependencies")
        Dependency.create(pattern=pattern, parent=parent, user_name=user_name[:200], created=time.time())


def undepend(pattern: str) -> int:
    return Dependency.delete().where(Dependency.pattern == pattern).execute()
