"""What every conversation uses: who may talk to the bot (and a flood of commands), who spoke and in which topic,
the bot's parts, admin checks, editing a reply, and the error handler, with their words."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from telegram import InlineKeyboardMarkup, Message, Update, User
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.chat import callbacks
from bot.chat.sender import Sender
from bot.config import Settings
from bot.db import oncall
from bot.pipeline.active_model import ActiveModel
from bot.pipeline.baselines import Baselines
from bot.pipeline.forecast import Forecaster
from bot.pipeline.tolerating import Tolerances

log = logging.getLogger(__name__)


def settings_of(context: ContextTypes.DEFAULT_TYPE) -> Settings:
    """The bot's settings, for any handler."""
    return context.bot_data["settings"]


def button_key(context: ContextTypes.DEFAULT_TYPE) -> bytes:
    """The key that signs the buttons whose data alone is no proof (callbacks.py): derived from the bot token,
    which only the bot holds."""
    return hashlib.sha256(b"rigwatch buttons\n" + settings_of(context).token.encode()).digest()


def model_of(context: ContextTypes.DEFAULT_TYPE) -> ActiveModel:
    return context.bot_data["model"]


def baselines_of(context: ContextTypes.DEFAULT_TYPE) -> Baselines:
    return context.bot_data["baselines"]


def forecaster_of(context: ContextTypes.DEFAULT_TYPE) -> Forecaster:
    return context.bot_data["forecaster"]


def tolerances_of(context: ContextTypes.DEFAULT_TYPE) -> Tolerances:
    return context.bot_data["tolerances"]


async def guard(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Runs before every handler: a chat that is not allowed gets one short refusal and nothing else; a member
    who floods the chat with commands gets one "slow down", and their commands are dropped for a while. Whoever
    writes in an allowed chat is remembered, so they can be put on call; such a person's private chat with the bot
    takes their /start (then a direct message can reach them) and the buttons of the alerts sent there."""
    chat, user = update.effective_chat, update.effective_user
    allowed = settings_of(context).allowed_chat_ids
    if chat is not None and chat.id in allowed:
        message = update.message
        if user is not None:
            await _remember(context, chat.id, user)
        if message is None or user is None or not (message.text or "").startswith("/"):
            return
        go_on = await context.bot_data["command_budget"].take(chat.id, user.id)
        if go_on:
            return
        if go_on is False:
            log.warning("user %d floods chat %d with commands: dropped for a while", user.id, chat.id)
            await message.reply_text(SLOW_DOWN)
        raise ApplicationHandlerStop
    if chat is not None and user is not None and chat.id == user.id and await asyncio.to_thread(
            oncall.known, user.id, allowed):
        await _in_private(update, context, user)
        return
    log.warning("refused chat %s (user %s): not in ALLOWED_CHAT_IDS", chat.id if chat else "?",
                user.id if user else "?")
    if update.callback_query:
        await update.callback_query.answer(NOT_ALLOWED_BUTTON, show_alert=True)
    elif update.effective_message and chat is not None:
        await update.effective_message.reply_text(refusal(chat.id), parse_mode=ParseMode.HTML)
    raise ApplicationHandlerStop


async def _remember(context: ContextTypes.DEFAULT_TYPE, chat_id: int, user: User) -> None:
    """Write down who wrote in a chat (once per process, and again when their name changes)."""
    seen: dict[tuple[int, int], tuple[str | None, str]] = context.bot_data.setdefault("people_seen", {})
    now = (user.username, user.full_name)
    if seen.get((chat_id, user.id)) != now:
        await asyncio.to_thread(oncall.seen, chat_id, user.id, user.username, user.full_name, time.time())
        seen[(chat_id, user.id)] = now


async def _in_private(update: Update, context: ContextTypes.DEFAULT_TYPE, user: User) -> None:
    """A team member's private chat: /start there lets escalations message them; an alert's buttons work (each
    checks its alert was sent to this chat); anything else is answered once and goes no further."""
    query, message = update.callback_query, update.message
    if query is not None and callbacks.IN_PRIVATE.match(query.data or ""):
        return
    if message is not None and (message.text or " ").split()[0].split("@")[0] == "/start":
        await _remember(context, user.id, user)
        await message.reply_text(DM_READY)
    elif query is not None:
        await query.answer(INVALID_BUTTON)
    elif message is not None:
        await message.reply_text(DM_ONLY_ALERTS)
    raise ApplicationHandlerStop


def sender_of(context: ContextTypes.DEFAULT_TYPE) -> Sender:
    """The sender that delivers the outbox: a handler that changed an alert runs it, so every copy shows it."""
    return context.bot_data["sender"]


def who(update: Update) -> tuple[int, str]:
    """The id and the name of whoever sent the update: '@bob', or their full name without a username."""
    user = update.effective_user
    return user.id, f"@{user.username}" if user.username else user.full_name


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any other command: point to /help."""
    await update.effective_message.reply_text(UNKNOWN_COMMAND)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log everything unexpected with its traceback; tell the chat something went wrong."""
    log.error("error while handling an update", exc_info=context.error)
    if not isinstance(update, Update):
        return
    try:
        if update.callback_query is not None:  # else the button spins until Telegram gives up
            await update.callback_query.answer(WENT_WRONG_BUTTON)
        elif update.effective_message:
            await update.effective_message.reply_text(WENT_WRONG)
    except TelegramError as exc:  # answered already, or Telegram is out: the log has the error
        log.debug("could not say so in the chat: %s", exc)


async def is_admin(update: Update, context: ContextTypes.DEFAULT_TYPE, command: str) -> bool:
    """Admin commands: anyone else gets a short refusal and nothing runs."""
    user = update.effective_user
    if user is not None and user.id in settings_of(context).admin_user_ids:
        return True
    log.warning("refused %s for user %s: not in ADMIN_USER_IDS", command, user.id if user else "?")
    if update.callback_query:
        await update.callback_query.answer(admins_only(command), show_alert=True)
    else:
        await update.effective_message.reply_text(not_admin(command, user.id if user else 0),
                                                  parse_mode=ParseMode.HTML)
    return False


async def edit(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    try:
        await message.edit_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    except BadRequest as exc:  # "message is not modified" and the like: the text is already right
        log.debug("edit refused: %s", exc.message)


async def invalid_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Callback data no button of ours carries."""
    log.warning("ignored callback %r from user %d", (update.callback_query.data or "")[:80],
                update.callback_query.from_user.id)
    await update.callback_query.answer(INVALID_BUTTON)


def thread_of(update: Update) -> int | None:
    """The forum topic a command was sent in; None for the general topic or a chat without topics."""
    message = update.effective_message
    return message.message_thread_id if message is not None and message.is_topic_message else None


def refusal(chat_id: int) -> str:
    """What a chat that is not allowed is told: its own id, so its owner can allow it."""
    return (
        f"This chat is not allowed to use this bot. Its chat id is <code>{chat_id}</code>: "
        "add it to ALLOWED_CHAT_IDS where the bot runs, then restart it."
    )


def not_admin(command: str, user_id: int) -> str:
    """The refusal of an admin command."""
    return (
        f"Only admins can use {command}. Your user id is <code>{user_id}</code>; "
        "an admin can add it to ADMIN_USER_IDS."
    )


UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."
DM_READY = ("✅ I can message you directly now: when you are on call and nobody answers an alert, an escalation can "
            "send it here, with its buttons. Commands work in your team's chat.")
DM_ONLY_ALERTS = ("Here I only send you alerts when an escalation calls you; commands work in your team's chat. "
                  "Send /start if you have not yet, so that I can.")
NOT_ALLOWED_BUTTON = "This chat is not allowed to use this bot."
INVALID_BUTTON = "This button is not valid."
WENT_WRONG = "Sorry, something went wrong; it has been logged."
WENT_WRONG_BUTTON = "Sorry, something went wrong; it has been logged. Try again."


def admins_only(command: str) -> str:
    """The answer to a button only admins may press."""
    return f"Only admins can use {command}."


SLOW_DOWN = ("⏳ Slow down: too many commands in a short time. I ignore your commands for a minute; "
             "alerts still come.")
