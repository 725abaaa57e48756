"""An incident's history: what happened to it and when (opened, each message sent or edited, each button pressed,
each reminder and escalation step, resolved), for /history and /report."""

from __future__ import annotations

from schema.tables import Event, Notice


def happened(incident_id: int, at: float, what: str, text: str = "", chat_id: int | None = None) -> None:
    """Write down one event of an incident."""
    Event.create(incident=incident_id, at=at, what=what, text=text[:1000], chat_id=chat_id)


def of_notice(notice_id: int, at: float, what: str, text: str = "") -> None:
    """An event of the incident a message (an outbox row) is about, in its chat."""
    notice = Notice.select(Notice.incident, Notice.chat_id).where(Notice.id == notice_id).first()
    if notice is not None:
        happened(notice.incident_id, at, what, text, notice.chat_id)


def of_group(incident_ids: list[int], chat_id: int, at: float, text: str) -> None:
    """A group message that names these incidents was sent to a chat."""
    if incident_ids:
        Event.insert_many([{"incident": i, "at": at, "what": "grouped", "text": text[:1000], "chat_id": chat_id}
                           for i in incident_ids]).execute()


def timeline(incident_id: int) -> list[Event]:
    """Everything that happened to an incident, oldest first."""
    return list(Event.select().where(Event.incident == incident_id).order_by(Event.at, Event.id))
