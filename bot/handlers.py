"""Telegram handlers: who may talk to the bot, the commands, and the correction buttons."""

from __future__ import annotations

import asyncio
import logging
import time

from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import ApplicationHandlerStop, ContextTypes

from agent.wire import DEVICE_RE
from bot import store, texts
from bot.active_model import ActiveModel
from bot.config import Settings

log = logging.getLogger(__name__)


def _settings(context: ContextTypes.DEFAULT_TYPE) -> Settings:
    return context.bot_data["settings"]


def _model(context: ContextTypes.DEFAULT_TYPE) -> ActiveModel:
    return context.bot_data["model"]


async def guard(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Runs before every handler: a chat that is not allowed gets one short refusal and nothing else."""
    chat = update.effective_chat
    if chat is not None and chat.id in _settings(context).allowed_chat_ids:
        return
    user = update.effective_user
    log.warning("refused chat %s (user %s): not in ALLOWED_CHAT_IDS", chat.id if chat else "?",
                user.id if user else "?")
    if update.callback_query:
        await update.callback_query.answer("This chat is not allowed to use this bot.", show_alert=True)
    elif update.effective_message and chat is not None:
        await update.effective_message.reply_text(texts.refusal(chat.id), parse_mode=ParseMode.HTML)
    raise ApplicationHandlerStop


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start and /help: what the bot does and its commands."""
    await update.effective_message.reply_text(texts.HELP, parse_mode=ParseMode.HTML)


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/status for the fleet, /status <device> for one machine."""
    settings = _settings(context)
    args = context.args or []
    if len(args) > 1 or (args and not DEVICE_RE.fullmatch(args[0])):
        await update.effective_message.reply_text("Usage: /status or /status <device>")
        return
    if not args:
        samples = await asyncio.to_thread(store.latest_per_device)
        text = texts.overview(samples, settings.alert_threshold)
    else:
        sample = await asyncio.to_thread(store.latest_sample, args[0])
        if sample is None:
            known = [s.device for s in await asyncio.to_thread(store.latest_per_device)]
            text = texts.unknown_device(args[0], known)
        else:
            text = texts.device_status(sample, settings.alert_threshold, _model(context).version)
    await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)


async def label_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press on ✅ Correct or ❌ Wrong prediction: store the label and show it on the alert."""
    query = update.callback_query
    parsed = texts.parse_callback(query.data)
    message = query.message
    sample = None
    if parsed is not None and message is not None:
        sample = await asyncio.to_thread(store.alerted_sample, parsed[0], message.chat.id, message.message_id)
    if sample is None:
        log.warning("ignored callback %r from user %d: not a button of one of our alerts", query.data[:80],
                    query.from_user.id)
        await query.answer("This button is not valid.")
        return
    value = parsed[1]
    user = query.from_user
    name = f"@{user.username}" if user.username else user.full_name
    await asyncio.to_thread(store.add_label, sample.id, value, user.id, name)
    await query.answer(f"Thanks: stored as {texts.LABEL_VALUES[value]}.")
    alert = texts.alert(sample, _model(context).drivers(sample.metrics))
    await query.edit_message_text(texts.labelled(alert, value, name, time.time()), parse_mode=ParseMode.HTML)


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any other command: point to /help."""
    await update.effective_message.reply_text("I don't know that command. /help lists what I can do.")


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log everything unexpected with its traceback; tell the chat something went wrong."""
    log.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message and update.callback_query is None:
        await update.effective_message.reply_text("Sorry, something went wrong; it has been logged.")
