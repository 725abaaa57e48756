"""Who gets a message about a device: the chats' subscriptions, by chat and forum topic.

A chat with no subscription gets every message in its general topic, so nothing changes for anyone who never
subscribes. Once a chat has subscriptions, each of its topics (or its general topic) gets what its own patterns
match, and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from schema.domain import matches
from schema.tables import Subscription, db

MAX_PER_CHAT = 50  # patterns in one chat, all topics together
GENERAL = 0  # the thread id stored for a chat's general topic

Destination = tuple[int, int | None]  # (chat id, forum topic or None for the general topic)


def destinations(device: str, chat_ids: Iterable[int]) -> list[Destination]:
    """Where a message about `device` goes, among the allowed chats."""
    rows = list(Subscription.select(Subscription.chat_id, Subscription.thread_id, Subscription.pattern).tuples())
    subscribed: dict[int, dict[int, list[str]]] = {}
    for chat, thread, pattern in rows:
        subscribed.setdefault(chat, {}).setdefault(thread, []).append(pattern)
    out: list[Destination] = []
    for chat in chat_ids:
        topics = subscribed.get(chat)
        if topics is None:
            out.append((chat, None))
            continue
        out.extend((chat, thread or None) for thread, patterns in sorted(topics.items())
                   if any(matches(p, device) for p in patterns))
    return out


def subscribe(chat_id: int, thread_id: int | None, patterns: list[str], user_id: int, user_name: str) -> list[str]:
    """Add patterns to a chat's topic; returns those that were new. Raises ValueError past MAX_PER_CHAT."""
    thread = thread_id or GENERAL
    with db.atomic():
        have = {p for (p,) in Subscription.select(Subscription.pattern).where(
            (Subscription.chat_id == chat_id) & (Subscription.thread_id == thread)).tuples()}
        new = [p for p in dict.fromkeys(patterns) if p not in have]
        total = Subscription.select().where(Subscription.chat_id == chat_id).count()
        if total + len(new) > MAX_PER_CHAT:
            raise ValueError(f"a chat has at most {MAX_PER_CHAT} subscriptions (this one has {total})")
        now = time.time()
        for pattern in new:
            Subscription.create(chat_id=chat_id, thread_id=thread, pattern=pattern, user_id=user_id,
                                user_name=user_name[:200], created=now)
    return new


def unsubscribe(chat_id: int, thread_id: int | None, patterns: list[str]) -> int:
    """Remove these patterns (none: all of them) from a chat's topic; how many were removed."""
    which = (Subscription.chat_id == chat_id) & (Subscription.thread_id == (thread_id or GENERAL))
    if patterns:
        which &= Subscription.pattern.in_(patterns)
    return Subscription.delete().where(which).execute()


def subscriptions(chat_id: int) -> list[Subscription]:
    """A chat's subscriptions, by topic (the general topic first), then pattern."""
    return list(Subscription.select().where(Subscription.chat_id == chat_id)
                .order_by(Subscription.thread_id, Subscription.pattern))
