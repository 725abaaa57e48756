"""Telegram handlers: who may talk to the bot, the commands, and the correction buttons."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import re
import time

from telegram import InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.ext import ApplicationHandlerStop, ContextTypes

from agent.wire import DEVICE_RE
from bot import charts, store, texts
from bot.active_model import ActiveModel
from bot.baselines import Baselines
from bot.config import Settings
from bot.forecast import Forecaster
from bot.store import StoredSample
from ml.features import FEATURES
from ml.registry import StoreError, UnknownVersion
from ml.retrain import retrain

log = logging.getLogger(__name__)
STATUS_CHART_HOURS = 2  # the chart under /status <device>, and /chart <device> without hours
CHART_MAX_HOURS = 720  # 30 days; the chart's query returns at most store.CHART_POINTS rows whatever the window


def _settings(context: ContextTypes.DEFAULT_TYPE) -> Settings:
    return context.bot_data["settings"]


def _model(context: ContextTypes.DEFAULT_TYPE) -> ActiveModel:
    return context.bot_data["model"]


def _baselines(context: ContextTypes.DEFAULT_TYPE) -> Baselines:
    return context.bot_data["baselines"]


def _forecaster(context: ContextTypes.DEFAULT_TYPE) -> Forecaster:
    return context.bot_data["forecaster"]


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
            usual = await asyncio.to_thread(_baselines(context).get, sample.device)
            forecasts = await asyncio.to_thread(_forecaster(context).forecasts, sample.device)
            text = texts.device_status(sample, settings.alert_threshold, _model(context).version, usual=usual,
                                       forecasts=forecasts, horizon_s=settings.forecast_hours * 3600)
    await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)
    if args and sample is not None:
        await _send_chart(update, context, sample, STATUS_CHART_HOURS)


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
        await update.effective_message.reply_text(
            f"Usage: /chart <device> [hours], hours from 1 to {CHART_MAX_HOURS}, e.g. /chart pc1 6"
        )
        return
    sample = await asyncio.to_thread(store.latest_sample, args[0])
    if sample is None:
        known = [s.device for s in await asyncio.to_thread(store.latest_per_device)]
        await update.effective_message.reply_text(texts.unknown_device(args[0], known), parse_mode=ParseMode.HTML)
        return
    if not await _send_chart(update, context, sample, hours):
        await update.effective_message.reply_text(texts.no_chart_data(sample.device, hours * 3600, sample.ts),
                                                  parse_mode=ParseMode.HTML)


async def _send_chart(update: Update, context: ContextTypes.DEFAULT_TYPE, latest: StoredSample, hours: int) -> bool:
    """Reply with the chart of the last `hours` of `latest`'s device; False when it sent nothing in them."""
    end = time.time()
    start = end - hours * 3600
    if latest.ts < start:
        return False
    threshold = _settings(context).alert_threshold
    # Drawing takes a tenth of a second or more: off the event loop, like the query it makes.
    png = await asyncio.to_thread(charts.render_chart, latest.device, start, end, threshold)
    await update.effective_message.reply_photo(
        png, caption=texts.chart_caption(latest.device, end - start, threshold), parse_mode=ParseMode.HTML,
        filename=f"{latest.device}-{hours}h.png",
    )
    return True


async def rejected_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/rejected: the latest invalid messages, so a sender can fix its script."""
    rows = await asyncio.to_thread(store.rejected)
    await update.effective_message.reply_text(texts.rejected(rows), parse_mode=ParseMode.HTML)


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
    usual = await asyncio.to_thread(_baselines(context).get, sample.device)
    alert = texts.alert(sample, _model(context).drivers(sample.metrics), usual)
    await query.edit_message_text(texts.labelled(alert, value, name, time.time()), parse_mode=ParseMode.HTML)


async def forecast_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press on ✅ Right forecast or ❌ Wrong forecast: store the verdict apart from the model's labels."""
    query = update.callback_query
    parsed = texts.parse_forecast_callback(query.data)
    message = query.message
    alert = None
    if parsed is not None and message is not None:
        alert = await asyncio.to_thread(store.forecast_alert, parsed[0], parsed[1], message.chat.id,
                                        message.message_id)
    if alert is None:
        log.warning("ignored callback %r from user %d: not a button of one of our forecasts", query.data[:80],
                    query.from_user.id)
        await query.answer("This button is not valid.")
        return
    value = parsed[2]
    user = query.from_user
    name = f"@{user.username}" if user.username else user.full_name
    await asyncio.to_thread(store.add_forecast_label, alert.id, value, user.id, name)
    await query.answer("Thanks: stored as a " + ("right" if value == 1 else "wrong") + " forecast.")
    text = texts.forecast_labelled(texts.stored_forecast_alert(alert), value, name, time.time())
    await query.edit_message_text(text, parse_mode=ParseMode.HTML)


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any other command: point to /help."""
    await update.effective_message.reply_text("I don't know that command. /help lists what I can do.")


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log everything unexpected with its traceback; tell the chat something went wrong."""
    log.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message and update.callback_query is None:
        await update.effective_message.reply_text("Sorry, something went wrong; it has been logged.")


async def _is_admin(update: Update, context: ContextTypes.DEFAULT_TYPE, command: str) -> bool:
    """Admin commands: anyone else gets a short refusal and nothing runs."""
    user = update.effective_user
    if user is not None and user.id in _settings(context).admin_user_ids:
        return True
    log.warning("refused %s for user %s: not in ADMIN_USER_IDS", command, user.id if user else "?")
    if update.callback_query:
        await update.callback_query.answer(f"Only admins can use {command}.", show_alert=True)
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
        await update.effective_message.reply_text("A retrain is already running; its result will be posted here.")
        return
    async with lock:
        model = _model(context)
        progress = await update.effective_message.reply_text(texts.retrain_progress("starting"))
        loop = asyncio.get_running_loop()
        edits: list[concurrent.futures.Future] = []

        def report(step: str) -> None:  # called from the training thread
            edits.append(asyncio.run_coroutine_threadsafe(_edit(progress, texts.retrain_progress(step)), loop))

        failure: Exception | None = None
        try:
            result = await asyncio.to_thread(
                retrain, model.store, model.current, lambda: store.training_frame(FEATURES), report
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
            await _edit(progress, f"❌ Retrain failed: {html.escape(str(failure))}\nThe active model is unchanged "
                                  f"(v{model.version}).")
            return
        markup = None if result.better else texts.activate_keyboard(result.saved.version,
                                                                    f"Activate v{result.saved.version} anyway")
        await _edit(progress, texts.retrain_result(result, activated=result.better), markup)


async def versions_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/versions: every model version, newest first; /versions <n>: one in full."""
    args = context.args or []
    if len(args) > 1 or (args and not re.fullmatch(r"v?\d{1,9}", args[0])):
        await update.effective_message.reply_text("Usage: /versions or /versions <version>, e.g. /versions 3")
        return
    model_store = _model(context).store
    try:
        listing, active = await asyncio.to_thread(lambda: (model_store.versions(), model_store.active()))
    except StoreError as exc:
        await update.effective_message.reply_text(f"The model store cannot be read: {exc}")
        return
    if not args:
        await update.effective_message.reply_text(texts.versions(listing, active), parse_mode=ParseMode.HTML)
        return
    wanted = int(args[0].lstrip("v"))
    record = next((r for r in listing if r.version == wanted), None)
    if record is None:
        known = ", ".join(f"v{r.version}" for r in listing) or "none"
        await update.effective_message.reply_text(f"There is no model v{wanted}. Versions: {known}")
        return
    await update.effective_message.reply_text(texts.version(record, active), parse_mode=ParseMode.HTML)


async def rollback_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/rollback [version] (admins): ask to confirm going back to the previous or the given version."""
    if not await _is_admin(update, context, "/rollback"):
        return
    args = context.args or []
    if len(args) > 1 or (args and not re.fullmatch(r"v?\d{1,9}", args[0])):
        await update.effective_message.reply_text("Usage: /rollback or /rollback <version>, e.g. /rollback 3")
        return
    model = _model(context)
    try:
        listing = await asyncio.to_thread(model.store.versions)
    except StoreError as exc:
        await update.effective_message.reply_text(f"The model store cannot be read: {exc}")
        return
    by_number = {v.version: v for v in listing}
    if args:
        target = int(args[0].lstrip("v"))
        if target not in by_number:
            known = ", ".join(f"v{n}" for n in sorted(by_number)) or "none"
            await update.effective_message.reply_text(f"There is no model v{target}. Versions: {known}")
            return
    else:
        older = [n for n in by_number if model.version is None or n < model.version]
        if not older:
            reply = f"v{model.version} is the oldest version: nothing to roll back to."
            await update.effective_message.reply_text(reply)
            return
        target = max(older)
    if target == model.version:
        await update.effective_message.reply_text(f"v{target} is already active.")
        return
    await update.effective_message.reply_text(
        texts.confirm_rollback(model.version, by_number[target]), parse_mode=ParseMode.HTML,
        reply_markup=texts.activate_keyboard(target, f"Roll back to v{target}"),
    )


async def activate_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press on "Roll back to vN" or "Activate vN anyway" (admins): verify and activate that version."""
    query = update.callback_query
    if not await _is_admin(update, context, "this button"):
        return
    version = texts.parse_activate(query.data)
    if version is None:
        await query.answer("This button is not valid.")
        return
    model = _model(context)
    try:
        await asyncio.to_thread(model.activate, version)
    except UnknownVersion:
        await query.answer(f"There is no model v{version}.")
        return
    except StoreError as exc:
        await query.answer(f"v{version} refused.")
        kept = f"v{model.version}" if model.version else "no model"
        await _edit(query.message, f"❌ Model v{version} refused: {html.escape(str(exc))}\n{kept} stays active.")
        return
    await query.answer(f"v{version} is active.")
    who = f"@{query.from_user.username}" if query.from_user.username else query.from_user.full_name
    await _edit(query.message, f"✅ Model v{version} is active now (by {html.escape(who)}).")


async def cancel_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Cancel on a confirmation (admins): nothing changes."""
    if not await _is_admin(update, context, "this button"):
        return
    await update.callback_query.answer("Cancelled.")
    await _edit(update.callback_query.message, "Cancelled: nothing changed.")


async def invalid_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Callback data no button of ours carries."""
    log.warning("ignored callback %r from user %d", (update.callback_query.data or "")[:80],
                update.callback_query.from_user.id)
    await update.callback_query.answer("This button is not valid.")
