"""Telegram handlers: who may talk to the bot, the commands, and the correction buttons. The teams' commands
(subscriptions, mutes) and a group message's buttons are in team_handlers.py, which shares settings_of,
sender_of and who."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import time

from telegram import InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from agent.vocabulary import DEVICE_RE
from bot import db
from bot.chat import callbacks, charts, model_texts, team_texts, texts, tolerance_texts, words
from bot.chat.sender import Sender
from bot.config import Settings
from bot.db import incidents
from bot.db import tolerances as stored_tolerances
from bot.pipeline import tolerating
from bot.pipeline.active_model import ActiveModel
from bot.pipeline.baselines import Baselines
from bot.pipeline.forecast import Forecaster
from bot.pipeline.tolerating import Tolerances
from ml.data import training_frame
from ml.features import FEATURES
from ml.retrain import retrain
from ml.store import StoreError, UnknownVersion
from schema.domain import ACTIONS_OF, PATTERN_RE, Action, matches

log = logging.getLogger(__name__)
STATUS_CHART_HOURS = 2  # the chart under /status <device>, and /chart <device> without hours
CHART_MARGIN_S = 15 * 60  # the chart of an incident shows this much before and after it
CHART_MAX_HOURS = 720  # 30 days; the chart's query returns at most db.CHART_POINTS rows whatever the window


def settings_of(context: ContextTypes.DEFAULT_TYPE) -> Settings:
    """The bot's settings, for any handler."""
    return context.bot_data["settings"]


def _model(context: ContextTypes.DEFAULT_TYPE) -> ActiveModel:
    return context.bot_data["model"]


def _baselines(context: ContextTypes.DEFAULT_TYPE) -> Baselines:
    return context.bot_data["baselines"]


def _forecaster(context: ContextTypes.DEFAULT_TYPE) -> Forecaster:
    return context.bot_data["forecaster"]


def _tolerances(context: ContextTypes.DEFAULT_TYPE) -> Tolerances:
    return context.bot_data["tolerances"]


async def guard(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Runs before every handler: a chat that is not allowed gets one short refusal and nothing else; a member
    who floods the chat with commands gets one "slow down", and their commands are dropped for a while."""
    chat = update.effective_chat
    if chat is not None and chat.id in settings_of(context).allowed_chat_ids:
        message, user = update.message, update.effective_user
        if message is None or user is None or not (message.text or "").startswith("/"):
            return
        go_on = await context.bot_data["command_budget"].take(chat.id, user.id)
        if go_on:
            return
        if go_on is False:
            log.warning("user %d floods chat %d with commands: dropped for a while", user.id, chat.id)
            await message.reply_text(team_texts.SLOW_DOWN)
        raise ApplicationHandlerStop
    user = update.effective_user
    log.warning("refused chat %s (user %s): not in ALLOWED_CHAT_IDS", chat.id if chat else "?",
                user.id if user else "?")
    if update.callback_query:
        await update.callback_query.answer(texts.NOT_ALLOWED_BUTTON, show_alert=True)
    elif update.effective_message and chat is not None:
        await update.effective_message.reply_text(texts.refusal(chat.id), parse_mode=ParseMode.HTML)
    raise ApplicationHandlerStop


def sender_of(context: ContextTypes.DEFAULT_TYPE) -> Sender:
    """The sender that delivers the outbox: a handler that changed an alert runs it, so every copy shows it."""
    return context.bot_data["sender"]


async def start_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start: what this bot watches and where its alerts go, then the help."""
    settings = settings_of(context)
    poller = context.bot_data.get("poller")
    machines = await asyncio.to_thread(db.device_count)
    if settings.kafka_bootstrap:
        watched = texts.watching_fleet(settings.kafka_topic, machines)
    else:
        watched = texts.watching_this_machine(getattr(poller.source, "device", "") if poller else "")
    if settings.remote_write_listen is not None:
        watched = texts.and_remote_write(watched, settings.remote_write_listen[1])
    text = texts.greeting(watched, update.effective_chat.id, sorted(settings.allowed_chat_ids))
    await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/help: what the bot does and its commands."""
    await update.effective_message.reply_text(texts.HELP, parse_mode=ParseMode.HTML)


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/status for the fleet, /status <device> for one machine, /status <pattern> for the machines matching."""
    settings = settings_of(context)
    args = context.args or []
    if len(args) > 1 or (args and not PATTERN_RE.fullmatch(args[0])):
        await update.effective_message.reply_text(texts.STATUS_USAGE)
        return
    markup = None
    sample = None
    if not args or not DEVICE_RE.fullmatch(args[0]):
        samples, silent, muted = await asyncio.to_thread(
            lambda: (db.latest_per_device(), db.silent_devices(), db.muting(time.time(), settings.timezone)))
        if args:
            samples = [s for s in samples if matches(args[0], s.device)]
        text = texts.overview(samples, settings.alert_threshold, silent=silent, muted=muted) if samples or not args \
            else team_texts.no_match(args[0])
    else:
        sample = await asyncio.to_thread(db.latest_sample, args[0])
        if sample is None:
            known = [s.device for s in await asyncio.to_thread(db.latest_per_device)]
            text = texts.unknown_device(args[0], known)
        else:
            usual = await asyncio.to_thread(_baselines(context).get, sample.device)
            forecasts = await asyncio.to_thread(_forecaster(context).forecasts, sample.device)
            silent, muted, tolerated = await asyncio.to_thread(
                lambda: (db.silent_devices(), db.muting(time.time(), settings.timezone),
                         stored_tolerances.tolerances(sample.device)))
            text = texts.device_status(sample, settings.alert_threshold, _model(context).version, usual=usual,
                                       forecasts=forecasts, horizon_s=settings.forecast_hours * 3600,
                                       silent=silent, muted=muted, tolerances=tolerated)
            markup = texts.missed_keyboard(sample.id)
    await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    if sample is not None:
        end = time.time()
        if sample.ts >= end - STATUS_CHART_HOURS * 3600:
            await _send_chart(update, context, sample.device, end - STATUS_CHART_HOURS * 3600, end)


def _chart_hours(args: list[str]) -> int | None:
    """The window of /chart <device> [hours] in hours, or None when the arguments are not that."""
    if not 1 <= len(args) <= 2 or not DEVICE_RE.fullmatch(args[0]):
        return None
    if len(args) == 1:
        return STATUS_CHART_HOURS
    hours = int(args[1]) if re.fullmatch(r"\d{1,4}", args[1]) else 0
    return hours if 1 <= hours <= CHART_MAX_HOURS else None


async def chart_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/chart <device> [hours]: one machine's metrics and P(stressed) over the last hours, as a picture."""
    args = context.args or []
    hours = _chart_hours(args)
    if hours is None:
        await update.effective_message.reply_text(texts.chart_usage(CHART_MAX_HOURS))
        return
    sample = await asyncio.to_thread(db.latest_sample, args[0])
    if sample is None:
        known = [s.device for s in await asyncio.to_thread(db.latest_per_device)]
        await update.effective_message.reply_text(texts.unknown_device(args[0], known), parse_mode=ParseMode.HTML)
        return
    end = time.time()
    if sample.ts < end - hours * 3600:
        await update.effective_message.reply_text(texts.no_chart_data(sample.device, hours * 3600, sample.ts),
                                                  parse_mode=ParseMode.HTML)
        return
    await _send_chart(update, context, sample.device, end - hours * 3600, end)


async def _send_chart(update: Update, context: ContextTypes.DEFAULT_TYPE, device: str, start: float,
                      end: float) -> None:
    """Reply with the chart of one device from `start` to `end`, its incidents shaded."""
    threshold = settings_of(context).alert_threshold

    def render() -> tuple[bytes, str | None]:  # queries and a drawing of a tenth of a second or more: off the loop
        latest = db.latest_sample(device)
        filesystems = latest.filesystems if latest else None
        png = charts.render_chart(device, start, end, threshold, db.incident_spans(device, start, end),
                                  texts.chart_disk(filesystems))
        return png, words.fullest(filesystems)

    png, fullest = await asyncio.to_thread(render)
    await update.effective_message.reply_photo(
        png, caption=texts.chart_caption(device, start, end, fullest), parse_mode=ParseMode.HTML,
        filename=f"{device}-{int(start)}.png",
    )


async def rejected_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/rejected: the latest invalid messages, so a sender can fix its script."""
    rows = await asyncio.to_thread(db.rejected)
    await update.effective_message.reply_text(texts.rejected(rows), parse_mode=ParseMode.HTML)


def who(update: Update) -> tuple[int, str]:
    """The id and the name of whoever sent the update: '@bob', or their full name without a username."""
    user = update.effective_user
    return user.id, f"@{user.username}" if user.username else user.full_name


async def incident_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button on an incident: ✅/❌ (a label and an acknowledgement; ❌ makes the machine tolerate what drove it),
    ↩️ (undo that), 🔕 (snooze reminders), 📈 (chart)."""
    query = update.callback_query
    parsed = callbacks.parse_incident(query.data)
    chat = update.effective_chat
    incident = None
    if parsed is not None and chat is not None:
        incident = await asyncio.to_thread(db.incident_for_button, parsed[0], chat.id)
    if incident is None or parsed[1] not in ACTIONS_OF[incident.kind]:
        log.warning("ignored callback %r from user %d: not a button of one of our incidents", query.data[:80],
                    query.from_user.id)
        await query.answer(texts.INVALID_BUTTON)
        return
    if parsed[1] == Action.CHART:
        await query.answer()
        await _send_chart(update, context, incident.device, incident.opened_ts - CHART_MARGIN_S,
                          (incident.resolved_ts or time.time()) + CHART_MARGIN_S)
        return
    if parsed[1] == Action.UNDO_TOLERANCE:
        await _undo(update, context, incident.id, incident.device)
        return
    user_id, name = who(update)
    now = await asyncio.to_thread(incidents.press, incident.id, parsed[1], user_id, name, time.time(),
                                  tolerating.wanted)
    await asyncio.to_thread(_tolerances(context).refresh)  # this process's next batch has it anyway
    await query.answer(texts.pressed(parsed[1], incident.device, now.detail.tolerated, now.detail.metric))
    context.application.create_task(sender_of(context).run(context.bot), name="send")  # every copy shows it


async def _undo(update: Update, context: ContextTypes.DEFAULT_TYPE, incident_id: int, device: str) -> None:
    """↩️ Undo on an alert a ❌ closed: the tolerances that ❌ set are gone (whoever set them, or an admin)."""
    query = update.callback_query
    user_id, name = who(update)
    admin = user_id in settings_of(context).admin_user_ids
    _incident, removed = await asyncio.to_thread(incidents.undo_tolerance, incident_id, user_id, name, admin,
                                                 time.time())
    await query.answer(tolerance_texts.undone(device, removed), show_alert=removed is None)
    if removed:
        await asyncio.to_thread(_tolerances(context).refresh)
        context.application.create_task(sender_of(context).run(context.bot), name="send")


async def missed_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """⚠️ Something is wrong here, under /status <device>: the model missed a problem; label the sample stressed."""
    query = update.callback_query
    metric_id = callbacks.parse_missed(query.data)
    sample = await asyncio.to_thread(db.sample_by_id, metric_id) if metric_id is not None else None
    if sample is None:
        log.warning("ignored callback %r from user %d", query.data[:80], query.from_user.id)
        await query.answer(texts.INVALID_BUTTON)
        return
    user_id, name = who(update)
    await asyncio.to_thread(db.add_label, sample.id, 1, user_id, name)
    await query.answer(texts.missed_labelled(sample), show_alert=True)


async def tolerance_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/tolerance <device> [reset [metric]]: what a ❌ taught a machine; reset forgets it (admins, or whoever set
    it)."""
    args = context.args or []
    metric = tolerance_texts.parse_tolerance_metric(args[2]) if len(args) == 3 else None
    if (not 1 <= len(args) <= 3 or not DEVICE_RE.fullmatch(args[0]) or (len(args) > 1 and args[1].lower() != "reset")
            or (len(args) == 3 and metric is None)):
        await update.effective_message.reply_text(tolerance_texts.TOLERANCE_USAGE)
        return
    device = args[0]
    rows = await asyncio.to_thread(stored_tolerances.tolerances, device)
    if len(args) == 1:
        await update.effective_message.reply_text(tolerance_texts.tolerance_list(device, rows),
                                                  parse_mode=ParseMode.HTML)
        return
    chosen = [row for row in rows if metric is None or row.metric == metric]
    user_id, name = who(update)
    others = sorted({row.user_name for row in chosen if row.user_id != user_id})
    if others and user_id not in settings_of(context).admin_user_ids:
        log.warning("refused /tolerance %s reset for user %d: set by %s", device, user_id, others)
        await update.effective_message.reply_text(tolerance_texts.tolerance_refused(device, others, user_id),
                                                  parse_mode=ParseMode.HTML)
        return
    removed = await asyncio.to_thread(stored_tolerances.untolerate, device, [row.metric for row in chosen])
    log.info("%s reset the tolerances %s of %s", name, removed, device)
    await asyncio.to_thread(_tolerances(context).refresh)
    await update.effective_message.reply_text(tolerance_texts.tolerance_reset(device, removed),
                                              parse_mode=ParseMode.HTML)


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any other command: point to /help."""
    await update.effective_message.reply_text(texts.UNKNOWN_COMMAND)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log everything unexpected with its traceback; tell the chat something went wrong."""
    log.error("error while handling an update", exc_info=context.error)
    if not isinstance(update, Update):
        return
    try:
        if update.callback_query is not None:  # else the button spins until Telegram gives up
            await update.callback_query.answer(texts.WENT_WRONG_BUTTON)
        elif update.effective_message:
            await update.effective_message.reply_text(texts.WENT_WRONG)
    except TelegramError as exc:  # answered already, or Telegram is out: the log has the error
        log.debug("could not say so in the chat: %s", exc)


async def _is_admin(update: Update, context: ContextTypes.DEFAULT_TYPE, command: str) -> bool:
    """Admin commands: anyone else gets a short refusal and nothing runs."""
    user = update.effective_user
    if user is not None and user.id in settings_of(context).admin_user_ids:
        return True
    log.warning("refused %s for user %s: not in ADMIN_USER_IDS", command, user.id if user else "?")
    if update.callback_query:
        await update.callback_query.answer(texts.admins_only(command), show_alert=True)
    else:
        await update.effective_message.reply_text(texts.not_admin(command, user.id if user else 0),
                                                  parse_mode=ParseMode.HTML)
    return False


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    try:
        await message.edit_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    except BadRequest as exc:  # "message is not modified" and the like: the text is already right
        log.debug("edit refused: %s", exc.message)


async def retrain_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/retrain (admins): train off the event loop, edit a progress message, compare, activate if not worse."""
    if not await _is_admin(update, context, "/retrain"):
        return
    lock: asyncio.Lock = context.bot_data["retrain_lock"]
    if lock.locked():
        await update.effective_message.reply_text(model_texts.RETRAIN_RUNNING)
        return
    async with lock:
        model = _model(context)
        progress = await update.effective_message.reply_text(model_texts.retrain_progress("starting"))
        loop = asyncio.get_running_loop()
        edits: list[concurrent.futures.Future] = []

        def report(step: str) -> None:  # called from the training thread
            edits.append(asyncio.run_coroutine_threadsafe(_edit(progress, model_texts.retrain_progress(step)), loop))

        failure: Exception | None = None
        try:
            result = await asyncio.to_thread(
                retrain, model.store, model.current, lambda: training_frame(FEATURES), report
            )
            if result.better:
                await asyncio.to_thread(model.activate, result.saved.version)
        except Exception as exc:  # the model store, the database: say so here and keep the model
            failure = exc
            if not isinstance(exc, StoreError):
                log.exception("retrain failed")
        # The step edits must land before the last one, or a late step would overwrite the result.
        await asyncio.gather(*map(asyncio.wrap_future, edits), return_exceptions=True)
        if failure is not None:
            await _edit(progress, model_texts.retrain_failed(failure, model.version))
            return
        markup = None if result.better else model_texts.activate_keyboard(result.saved.version,
                                                                    model_texts.activate_anyway(result.saved.version))
        await _edit(progress, model_texts.retrain_result(result, activated=result.better), markup)


async def versions_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/versions: every model version, newest first; /versions <n>: one in full."""
    args = context.args or []
    if len(args) > 1 or (args and not re.fullmatch(r"v?\d{1,9}", args[0])):
        await update.effective_message.reply_text(model_texts.VERSIONS_USAGE)
        return
    model_store = _model(context).store
    try:
        listing, active = await asyncio.to_thread(lambda: (model_store.versions(), model_store.active()))
    except StoreError as exc:
        await update.effective_message.reply_text(model_texts.store_unreadable(exc))
        return
    if not args:
        await update.effective_message.reply_text(model_texts.versions(listing, active), parse_mode=ParseMode.HTML)
        return
    wanted = int(args[0].lstrip("v"))
    record = next((r for r in listing if r.version == wanted), None)
    if record is None:
        await update.effective_message.reply_text(model_texts.no_such_version(wanted, [r.version for r in listing]))
        return
    await update.effective_message.reply_text(model_texts.version(record, active), parse_mode=ParseMode.HTML)


async def rollback_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/rollback [version] (admins): ask to confirm going back to the previous or the given version."""
    if not await _is_admin(update, context, "/rollback"):
        return
    args = context.args or []
    if len(args) > 1 or (args and not re.fullmatch(r"v?\d{1,9}", args[0])):
        await update.effective_message.reply_text(model_texts.ROLLBACK_USAGE)
        return
    model = _model(context)
    try:
        listing = await asyncio.to_thread(model.store.versions)
    except StoreError as exc:
        await update.effective_message.reply_text(model_texts.store_unreadable(exc))
        return
    by_number = {v.version: v for v in listing}
    if args:
        target = int(args[0].lstrip("v"))
        if target not in by_number:
            await update.effective_message.reply_text(model_texts.no_such_version(target, sorted(by_number)))
            return
    else:
        older = [n for n in by_number if model.version is None or n < model.version]
        if not older:
            await update.effective_message.reply_text(model_texts.nothing_older(model.version))
            return
        target = max(older)
    if target == model.version:
        await update.effective_message.reply_text(model_texts.already_active(target))
        return
    await update.effective_message.reply_text(
        model_texts.confirm_rollback(model.version, by_number[target]), parse_mode=ParseMode.HTML,
        reply_markup=model_texts.activate_keyboard(target, model_texts.roll_back_to(target)),
    )


async def activate_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press on "Roll back to vN" or "Activate vN anyway" (admins): verify and activate that version."""
    query = update.callback_query
    if not await _is_admin(update, context, "this button"):
        return
    version = callbacks.parse_activate(query.data)
    if version is None:
        await query.answer(texts.INVALID_BUTTON)
        return
    await query.answer(model_texts.activating(version))  # loading a version can take a while: the button stops spinning
    model = _model(context)
    try:
        await asyncio.to_thread(model.activate, version)
    except UnknownVersion:
        await _edit(query.message, model_texts.no_version(version))
        return
    except StoreError as exc:
        await _edit(query.message, model_texts.version_refused_kept(version, exc, model.version))
        return
    await _edit(query.message, model_texts.version_activated(version, who(update)[1]))


async def cancel_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Cancel on a confirmation (admins): nothing changes."""
    if not await _is_admin(update, context, "this button"):
        return
    await update.callback_query.answer(texts.CANCELLED)
    await _edit(update.callback_query.message, texts.CANCELLED_NOTHING_CHANGED)


async def invalid_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Callback data no button of ours carries."""
    log.warning("ignored callback %r from user %d", (update.callback_query.data or "")[:80],
                update.callback_query.from_user.id)
    await update.callback_query.answer(texts.INVALID_BUTTON)
