"""The outbox: a message to send is a `Notice` row, written in the transaction that decided it, claimed in the
database before it is sent (so two processes never send the same one), and marked sent, retried or failed."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from peewee import fn

from bot.db import events
from bot.db.connection import is_postgres
from bot.db.routing import destinations
from schema.domain import NoticeKind, Reply, State
from schema.tables import Group, Incident, Notice, db

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 30.0  # wait long for an answer: a send that times out may have gone through
CLAIM_S = SEND_TIMEOUT_S + 15  # a row is claimed just before its send, for longer than that send can take
BATCH = 50
STALE_S = 86400.0  # a group is kept up to date for a day after its last member joined
# PostgreSQL advisory lock held by the transaction that groups a notice, until it commits: one lock for all
# chats, so two transactions never wait for each other in a circle ("Rigwatch" in ASCII).
GROUPING_LOCK = 0x5269677761746368


@dataclass(frozen=True)
class Route:
    """Where messages go and how they group: the allowed chats (each chat's subscriptions pick its topics), and
    ALERT_GROUP_SECONDS / ALERT_GROUP_MIN."""

    chat_ids: tuple[int, ...]
    group_s: float = 30.0
    group_min: int = 3


def notify(incident: Incident, kind: NoticeKind, text: str | None, change: str, now: float, route: Route,
           delay: float = 0.0) -> bool:
    """Queue a message about the incident for every chat and topic that wants it: the alert itself, or a reply
    with `text`, `delay` seconds from now. `change` is what it announces (a Kind or a Reply); changes of one kind
    in one chat and topic group into one message (`Group`). Whether any was queued."""
    queued = False
    for chat, thread in destinations(incident.device, route.chat_ids):
        notice = Notice.create(incident=incident.id, chat_id=chat, thread_id=thread, kind=kind, text=text,
                               change=change, created=now, due=now + delay)
        _group(notice, now, route)
        queued = True
    return queued


def rewrite(incident_id: int, change: str, text: str, due: float | None) -> None:
    """A reply about the incident not sent yet says `text` instead (and is due at `due`, if given)."""
    changes: dict[object, object] = {Notice.text: text}
    if due is not None:
        changes[Notice.due] = due
    Notice.update(changes).where((Notice.incident == incident_id) & (Notice.kind == NoticeKind.REPLY)
                                 & (Notice.change == change) & Notice.sent.is_null() & Notice.failed.is_null()
                                 ).execute()


def escalate(incident: Incident, chat_id: int, thread_id: int | None, kind: NoticeKind, text: str | None, now: float,
             route: Route) -> bool:
    """Queue an escalation's message about the incident to one chat (or topic, or a person's private chat): its
    alert, with its buttons, grouping with others sent there together; or a reply that calls someone. Whether it
    was queued (an alert already there is not sent twice)."""
    if kind == NoticeKind.ALERT and _alert(incident.id, chat_id, thread_id) is not None:
        return False
    notice = Notice.create(incident=incident.id, chat_id=chat_id, thread_id=thread_id, kind=kind, text=text,
                           change=incident.kind if kind == NoticeKind.ALERT else Reply.ESCALATED, created=now,
                           due=now, escalated=True)
    if kind == NoticeKind.ALERT:
        _group(notice, now, route)
    return True


def _group(notice: Notice, now: float, route: Route) -> None:
    """Join the group of the same change in the same chat and topic while one is open (its first member came
    within group_s), or open one when this is the group_min-th such change within group_s. Members not yet
    sent on their own are sent only as part of the group. A group is open for a bounded time, not as long as
    members keep trickling in: a member joins by an edit, which notifies nobody, so a change after that time
    starts a message of its own, which does."""
    if route.group_min <= 1:
        return
    if is_postgres():  # two processes would each open a group; the second waits for the first to commit
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (GROUPING_LOCK,))
    group = (Group.select().where(_where(Group, notice.chat_id, notice.thread_id) & (Group.change == notice.change)
                                    & (Group.created >= now - route.group_s))
              .order_by(Group.id.desc()).first())
    if group is not None:
        Group.update(last_join=now).where(Group.id == group.id).execute()
        Notice.update(group=group.id).where(Notice.id == notice.id).execute()
        return
    peers = list(Notice.select(Notice.id, Notice.created).where(
        _where(Notice, notice.chat_id, notice.thread_id) & (Notice.change == notice.change)
        & (Notice.created >= now - route.group_s) & Notice.group.is_null()))
    if len(peers) < route.group_min:  # peers include this notice
        return
    group = Group.create(chat_id=notice.chat_id, thread_id=notice.thread_id, change=notice.change,
                           created=min(p.created for p in peers), last_join=now, due=now)
    Notice.update(group=group.id).where(Notice.id.in_([p.id for p in peers])).execute()


def _where(table: type[Notice] | type[Group], chat_id: int, thread_id: int | None) -> object:
    """The rows of one chat and forum topic (None: the general topic)."""
    thread = table.thread_id.is_null() if thread_id is None else table.thread_id == thread_id
    return (table.chat_id == chat_id) & thread


def _alert(incident_id: int, chat_id: int, thread_id: int | None) -> Notice | None:
    """The incident's alert in one chat and topic."""
    return Notice.get_or_none((Notice.incident == incident_id) & _where(Notice, chat_id, thread_id)
                              & (Notice.kind == NoticeKind.ALERT))


Row = type[Notice] | type[Group]  # an outbox row: a message about one incident, or a group's message


def _free(table: Row, now: float) -> object:
    return table.claimed_until.is_null() | (table.claimed_until < now)


def claim(table: Row, row_id: int, unsent: bool) -> bool:
    """Take one row for this process, or learn that another process has it (or, with `unsent`, has sent it
    since this one read it: the claim is checked against the row as it is now)."""
    now = time.time()
    which = (table.id == row_id) & _free(table, now)
    if unsent:
        which &= table.sent.is_null() & table.failed.is_null()
        if table is Notice:  # and not folded into a group since it was read
            which &= Notice.group.is_null() | Notice.expanded
    return table.update(claimed_until=now + CLAIM_S).where(which).execute() == 1


def release(table: Row, row_id: int) -> None:
    """Let the row go unsent or unedited, for a later try by any process."""
    table.update(claimed_until=None).where(table.id == row_id).execute()


def record_retry(table: Row, row_id: int, seconds: float, now: float, error: str) -> None:
    """Telegram could not take the message now: try again in `seconds`."""
    table.update(due=now + seconds, attempts=table.attempts + 1, claimed_until=None).where(
        table.id == row_id).execute()
    log.debug("%s %d: %s; next try in %.0f s", table.__name__.lower(), row_id, error, seconds)


def due_now(now: float) -> int:
    """Telegram answers again: every message waiting out its backoff after a failure is due at once (in the order
    they were queued: by id). How many."""
    waiting = 0
    for table in (Notice, Group):
        waiting += table.update(due=now).where(table.sent.is_null() & table.failed.is_null() & (table.due > now)
                                               & (table.attempts > 0)).execute()
    return waiting


def record_failed(table: Row, row_id: int, error: str) -> None:
    """The message can never be delivered (the bot was blocked, the chat is gone)."""
    table.update(failed=error[:500], claimed_until=None).where(table.id == row_id).execute()


def due(now: float) -> list[tuple[Notice, Incident, int | None]]:
    """Unsent, unclaimed notices whose time has come and that are not sent as part of a group alone, oldest
    first, with the message a reply answers (the alert, or the group the alert is part of)."""
    rows = (Notice.select(Notice, Incident).join(Incident)
            .where(Notice.sent.is_null() & Notice.failed.is_null() & (Notice.due <= now) & _free(Notice, now)
                   & (Notice.group.is_null() | Notice.expanded))
            .order_by(Notice.id).limit(BATCH))
    out = []
    for notice in rows:
        reply_to = None
        if notice.kind == NoticeKind.REPLY:
            alert = _alert(notice.incident_id, notice.chat_id, notice.thread_id)
            shown = _shown_in(alert)
            if alert is not None and shown is None and alert.failed is None:
                continue  # the alert goes first; this reply answers it
            reply_to = shown
        out.append((notice, notice.incident, reply_to))
    return out


def _shown_in(alert: Notice | None) -> int | None:
    """The message that shows an alert: its own, else the group's it is part of (None: not sent yet)."""
    if alert is None:
        return None
    if alert.message_id is not None or alert.group_id is None:
        return alert.message_id
    return Group.select(Group.message_id).where(Group.id == alert.group_id).scalar()


def stale(now: float, edit_every_s: float) -> list[tuple[Notice, Incident]]:
    """Sent incident messages that show an older state of their incident, and may be edited now: at once when
    the incident ended or a person acted on it, else at most every `edit_every_s`."""
    query = (Notice.select(Notice, Incident).join(Incident)
             .where((Notice.kind == NoticeKind.ALERT) & Notice.message_id.is_null(False) & _free(Notice, now)
                    & (Incident.revision > Notice.shown_revision)
                    & ((Incident.state != State.OPEN) | Notice.edited.is_null() | (Incident.acted > Notice.edited)
                       | (Notice.edited <= now - edit_every_s)))
             .order_by(Notice.id).limit(BATCH))
    return [(n, n.incident) for n in query]


def record_sent(notice_id: int, message_id: int, revision: int, now: float) -> None:
    Notice.update(sent=now, message_id=message_id, shown_revision=revision, edited=now, claimed_until=None,
                  attempts=Notice.attempts + 1).where(Notice.id == notice_id).execute()
    events.of_notice(notice_id, now, "sent", f"message {message_id}")


def record_edit(notice_id: int, revision: int, now: float) -> None:
    Notice.update(claimed_until=None).where(Notice.id == notice_id).execute()
    # The newest state wins: a slow edit of an older revision never overwrites the record of a newer one.
    if Notice.update(shown_revision=revision, edited=now).where(
            (Notice.id == notice_id) & (Notice.shown_revision < revision)).execute():
        events.of_notice(notice_id, now, "edited", f"to revision {revision}")


def due_groups(now: float) -> list[Group]:
    """Groups whose message is due and not claimed, oldest first."""
    return list(Group.select().where(Group.sent.is_null() & Group.failed.is_null() & (Group.due <= now)
                                      & _free(Group, now)).order_by(Group.id).limit(BATCH))


def members(group_id: int) -> list[tuple[Notice, Incident]]:
    """A group's notices and their incidents, in the order they joined."""
    query = Notice.select(Notice, Incident).join(Incident).where(Notice.group == group_id).order_by(Notice.id)
    return [(n, n.incident) for n in query]


def reply_target(group: Group) -> int | None:
    """The message a group of replies answers: the group message of its first member's alert, if any."""
    first = Notice.select(Notice.incident).where(Notice.group == group.id).order_by(Notice.id).first()
    if first is None:
        return None
    return _shown_in(_alert(first.incident_id, group.chat_id, group.thread_id))


def stale_groups(now: float, edit_every_s: float) -> list[tuple[Group, int, int]]:
    """Sent groups whose message names fewer members than joined (edited at once), or shows older states of its
    members' incidents (at most every `edit_every_s`); with their member count and revision sum now."""
    recent = Group.select(Group.id).where(Group.message_id.is_null(False) & (Group.last_join >= now - STALE_S))
    sums = (Notice.select(Notice.group, fn.COUNT(Notice.id), fn.SUM(Incident.revision)).join(Incident)
            .where(Notice.group.in_(recent)).group_by(Notice.group).tuples())
    totals = {group: (count, revisions) for group, count, revisions in sums}
    out = []
    for group in Group.select().where(Group.id.in_(list(totals)) & _free(Group, now)).order_by(Group.id):
        count, revisions = totals[group.id]
        if count > group.shown_members or (revisions > group.shown_revision
                                            and (group.edited or 0) <= now - edit_every_s):
            out.append((group, count, revisions))
    return out


def record_group(group_id: int, message_id: int | None, count: int, revisions: int, now: float) -> None:
    """A group's message was sent (`message_id`) or edited to show `count` members at `revisions`."""
    changes: dict[object, object] = {Group.claimed_until: None, Group.edited: now}
    if message_id is not None:
        changes.update({Group.sent: now, Group.message_id: message_id})
    Group.update(changes).where(Group.id == group_id).execute()
    if message_id is not None:
        group = Group.get_by_id(group_id)
        named = [n.incident_id for n in Notice.select(Notice.incident).where(Notice.group == group_id)]
        events.of_group(named, group.chat_id, now, f"named in a group message of {count} (message {message_id})")
    Group.update(shown_members=count, shown_revision=revisions).where(
        (Group.id == group_id) & (Group.shown_revision <= revisions)).execute()


def group_in(group_id: int, chat_id: int) -> Group | None:
    """A group whose message went to this chat; None for one of another chat (a forged button)."""
    return Group.get_or_none((Group.id == group_id) & (Group.chat_id == chat_id))


def expand(incident_id: int, chat_id: int, thread_id: int | None) -> Notice | None:
    """Send a grouped alert on its own as well, with its buttons (someone asked for it in this chat and topic);
    the alert's notice, None when no alert of that incident went there as part of a group."""
    notice = _alert(incident_id, chat_id, thread_id)
    if notice is None or notice.group_id is None:
        return None
    if not notice.expanded and notice.sent is None:
        Notice.update(expanded=True, due=time.time()).where(Notice.id == notice.id).execute()
    return notice
