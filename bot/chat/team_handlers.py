"""Telegram handlers of teams: subscriptions by chat and forum topic (/subscribe, /unsubscribe,
/subscriptions), maintenance (/mute, /muted, /unmute) and a machine's button on a group message. Their words
are in team_texts.py; who may talk to the bot and the fleet's commands are in handlers.py."""

from __future__ import annotations

import asyncio
import logging
import time

from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import ContextTypes

from bot import db
from bot.chat import callbacks, team_texts, texts, words
from bot.chat.handlers import sender_of, settings_of, who
from bot.db import outbox
from schema.domain import PATTERN_RE, matches

log = logging.getLogger(__name__)


def _thread(update: Update) -> int | None:
    """The forum topic a command was sent in; None for the general topic or a chat without topics."""
    message = update.effective_message
    return message.message_thread_id if message is not None and message.is_topic_message else None


async def mute_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/mute <pattern> [duration] [reason] or /mute <pattern> <days> <hh:mm-hh:mm> [reason]: no incidents for
    machines under maintenance, once or in a recurring window."""
    tz = settings_of(context).timezone
    request = team_texts.parse_mute(context.args or [])
    if isinstance(request, str):
        await update.effective_message.reply_text(request)
        return
    if await asyncio.to_thread(db.count_mutes) >= team_texts.MAX_MUTES:
        await update.effective_message.reply_text(team_texts.TOO_MANY_MUTES)
        return
    user_id, name = who(update)
    until = time.time() + request.seconds if request.seconds is not None else None
    await asyncio.to_thread(db.mute, request.pattern, until, request.window, request.reason, user_id, name)
    known = await asyncio.to_thread(_device_names)
    log.info("%s muted %s %s: %s", name, request.pattern,
             request.window.describe() if request.window else f"until {words.when(until or 0)}", request.reason)
    matching = sum(matches(request.pattern, d) for d in known)
    await update.effective_message.reply_text(team_texts.muted_reply(request, until, name, tz, matching),
                                              parse_mode=ParseMode.HTML)


def _device_names() -> list[str]:
    return [d.name for d in db.devices()]


async def unmute_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/unmute <pattern>: its mutes and windows end; alerts again from the next sample."""
    args = context.args or []
    if len(args) != 1 or not PATTERN_RE.fullmatch(args[0]):
        await update.effective_message.reply_text(team_texts.UNMUTE_USAGE)
        return
    ended = await asyncio.to_thread(db.unmute, args[0])
    await update.effective_message.reply_text(team_texts.unmuted(args[0], ended), parse_mode=ParseMode.HTML)


async def muted_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/muted: the mutes and windows, by whom, until when or when, and why."""
    now = time.time()
    rows = await asyncio.to_thread(db.mutes, now)
    await update.effective_message.reply_text(team_texts.mutes(rows, now, settings_of(context).timezone),
                                              parse_mode=ParseMode.HTML)


async def subscribe_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/subscribe <pattern>…: this chat's topic gets the messages about the machines matching."""
    asked = team_texts.patterns(context.args or [])
    if asked is None:
        await update.effective_message.reply_text(team_texts.SUBSCRIBE_USAGE)
        return
    chat, thread = update.effective_chat.id, _thread(update)
    user_id, name = who(update)
    try:
        added = await asyncio.to_thread(db.subscribe, chat, thread, asked, user_id, name)
    except ValueError as exc:
        await update.effective_message.reply_text(f"{exc}: /unsubscribe some first.")
        return
    log.info("%s subscribed chat %d topic %s to %s", name, chat, thread, ", ".join(added) or "nothing new")
    known = await asyncio.to_thread(_device_names)
    text = team_texts.subscribed(added, asked, thread) + team_texts.unmatched(asked, known)
    await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)


async def unsubscribe_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/unsubscribe [pattern…]: remove some (or all) of this topic's subscriptions."""
    args = context.args or []
    asked = team_texts.patterns(args) if args else []
    if asked is None:
        await update.effective_message.reply_text(team_texts.UNSUBSCRIBE_USAGE)
        return
    chat, thread = update.effective_chat.id, _thread(update)
    removed = await asyncio.to_thread(db.unsubscribe, chat, thread, asked)
    left = len(await asyncio.to_thread(db.subscriptions, chat))
    await update.effective_message.reply_text(team_texts.unsubscribed(removed, left, thread), parse_mode=ParseMode.HTML)


async def subscriptions_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/subscriptions: this chat's subscriptions, by topic."""
    rows = await asyncio.to_thread(db.subscriptions, update.effective_chat.id)
    await update.effective_message.reply_text(team_texts.subscription_list(rows), parse_mode=ParseMode.HTML)


async def expand_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A machine's button on a group message: its own alert, with its buttons, in this chat."""
    query = update.callback_query
    incident_id = callbacks.parse_expand(query.data)
    chat = update.effective_chat
    notice = None
    if incident_id is not None and chat is not None:
        notice = await asyncio.to_thread(outbox.expand, incident_id, chat.id, _thread(update))
    if notice is None:
        log.warning("ignored callback %r from user %d", query.data[:80], query.from_user.id)
        await query.answer(texts.INVALID_BUTTON)
        return
    device = await asyncio.to_thread(lambda: notice.incident.device)
    await query.answer(team_texts.expanded(device, notice.sent is not None or notice.expanded))
    context.application.create_task(sender_of(context).run(context.bot), name="send")
