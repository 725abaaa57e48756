"""The outbox: a message to send is a `Notice` row, written in the transaction that decided it, claimed in the
database before it is sent (so two processes never send the same one), and marked sent, retried or failed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from schema.domain import NoticeKind, State
from schema.tables import Incident, Notice

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 30.0  # wait long for an answer: a send that times out may have gone through
CLAIM_S = SEND_TIMEOUT_S + 15  # a row is claimed just before its send, for longer than that send can take
BATCH = 50


def notify(incident: Incident, kind: NoticeKind, text: str | None, now: float, chat_ids: Iterable[int]) -> bool:
    """Queue a message about the incident for every chat: the alert itself, or a reply with `text`; whether
    any was queued."""
    rows = [{"incident": incident.id, "chat_id": chat, "kind": kind, "text": text, "created": now, "due": now}
            for chat in chat_ids]
    if rows:
        Notice.insert_many(rows).execute()
    return bool(rows)


def _free(now: float) -> object:
    return Notice.claimed_until.is_null() | (Notice.claimed_until < now)


def claim(notice_id: int, unsent: bool) -> bool:
    """Take one row for this process, or learn that another process has it (or, with `unsent`, has sent it
    since this one read it: the claim is checked against the row as it is now)."""
    now = time.time()
    which = (Notice.id == notice_id) & _free(now)
    if unsent:
        which &= Notice.sent.is_null() & Notice.failed.is_null()
    return Notice.update(claimed_until=now + CLAIM_S).where(which).execute() == 1


def due(now: float) -> list[tuple[Notice, Incident, int | None]]:
    """Unsent, unclaimed notices whose time has come, oldest first, with the message a reply answers."""
    rows = (Notice.select(Notice, Incident).join(Incident)
            .where(Notice.sent.is_null() & Notice.failed.is_null() & (Notice.due <= now) & _free(now))
            .order_by(Notice.id).limit(BATCH))
    out = []
    for notice in rows:
        reply_to = None
        if notice.kind == NoticeKind.REPLY:
            alert = Notice.get_or_none((Notice.incident == notice.incident_id) & (Notice.chat_id == notice.chat_id)
                                       & (Notice.kind == NoticeKind.ALERT))
            if alert is not None and alert.sent is None and alert.failed is None:
                continue  # the alert goes first; this reply answers it
            reply_to = alert.message_id if alert is not None else None
        out.append((notice, notice.incident, reply_to))
    return out


def stale(now: float, edit_every_s: float) -> list[tuple[Notice, Incident]]:
    """Sent incident messages that show an older state of their incident, and may be edited now: at once when
    the incident ended or a person acted on it, else at most every `edit_every_s`."""
    query = (Notice.select(Notice, Incident).join(Incident)
             .where((Notice.kind == NoticeKind.ALERT) & Notice.message_id.is_null(False) & _free(now)
                    & (Incident.revision > Notice.shown_revision)
                    & ((Incident.state != State.OPEN) | Notice.edited.is_null() | (Incident.acted > Notice.edited)
                       | (Notice.edited <= now - edit_every_s)))
             .order_by(Notice.id).limit(BATCH))
    return [(n, n.incident) for n in query]


def record_sent(notice_id: int, message_id: int, revision: int, now: float) -> None:
    Notice.update(sent=now, message_id=message_id, shown_revision=revision, edited=now, claimed_until=None,
                  attempts=Notice.attempts + 1).where(Notice.id == notice_id).execute()


def record_edit(notice_id: int, revision: int, now: float) -> None:
    Notice.update(claimed_until=None).where(Notice.id == notice_id).execute()
    # The newest state wins: a slow edit of an older revision never overwrites the record of a newer one.
    Notice.update(shown_revision=revision, edited=now).where(
        (Notice.id == notice_id) & (Notice.shown_revision < revision)).execute()


def record_retry(notice_id: int, seconds: float, now: float, error: str) -> None:
    Notice.update(due=now + seconds, attempts=Notice.attempts + 1, claimed_until=None).where(
        Notice.id == notice_id).execute()
    log.debug("notice %d: %s; next try in %.0f s", notice_id, error, seconds)


def record_failed(notice_id: int, error: str) -> None:
    Notice.update(failed=error[:500], claimed_until=None).where(Notice.id == notice_id).execute()


def release(notice_id: int) -> None:
    Notice.update(claimed_until=None).where(Notice.id == notice_id).execute()
