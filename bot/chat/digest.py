"""The digest: /digest sets, stops or shows a chat's (or forum topic's) daily or weekly summary, and the job that
sends it once per period, with its words and its picture.

A period is claimed in the database before its digest is sent (bot/db/digests.py), so whichever process or
restart sends it, it goes out once; a digest the bot could not send at its time goes out as soon as it can, says
that it is late, and only for the newest period: a bot that was down for a week sends one digest, not seven.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo

from telegram import Bot, ReplyParameters, Update
from telegram.constants import MessageLimit, ParseMode
from telegram.ext import BaseHandler, CommandHandler, ContextTypes

from bot.chat import charts, common
from bot.chat.forecasts import forecast_line, forecast_word
from bot.chat.formatting import ago, clip, escape, plural
from bot.chat.sender import Failure, SendFailed, classified
from bot.chat.tolerance import tolerance_value, tolerance_word
from bot.config import Settings
from bot.db import Digest, Incident, digests
from bot.db.digests import Period
from bot.pipeline.active_model import ActiveModel
from bot.pipeline.forecast import Forecast, Forecaster
from ml.store import ModelVersion, StoreError
from ml.versions import holdout, scores
from schema.domain import Kind
from schema.schedule import Schedule, day_starts

log = logging.getLogger(__name__)
EVERY_S = 30.0  # how often the job looks for a due digest
FIRST_S = 5.0  # its first look after start: a digest missed while the bot was down goes out at once
LATE_S = 120.0  # sent later than this after its time, a digest says it is late
HEADING_S = 7 * 86400  # machines heading for full within this are named
CHART_DAYS = 14
SHOWN = 5  # lines of a list before "… and N more"
SEND_TIMEOUT_S = 60.0  # a photo upload may take a while on a slow link

KINDS = {  # how each kind of incident is counted
    Kind.STRESSED: ("🔴", "stressed", "stressed"), Kind.SILENT: ("⚪", "silent", "silent"),
    Kind.FORECAST: ("📈", "forecast", "forecasts"), Kind.CONDITION: ("🛠", "problem", "problems"),
}


def usage(tz: tzinfo) -> str:
    return (f"Usage: /digest daily 09:00 or /digest weekly mon 09:00 (times in {tz}), /digest off to stop it; "
            "/digest alone shows this chat's.")


def _here(thread_id: int | None) -> str:
    return "this topic" if thread_id else "this chat"


def _local(ts: float, tz: tzinfo) -> str:
    """'Tue 2 Dec 09:00' in the bot's time zone."""
    local = datetime.fromtimestamp(ts, tz)
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def schedule_text(row: Digest | None, thread_id: int | None, now: float, tz: tzinfo) -> str:
    """/digest: the schedule of this chat or topic, when the next digest is due and when the last went out."""
    if row is None:
        return (f"{_here(thread_id).capitalize()} gets no digest. An admin can set one: /digest daily 09:00 or "
                f"/digest weekly mon 09:00 (times in {tz}).")
    text = (f"📰 {_here(thread_id).capitalize()} gets a digest {row.schedule.describe()} ({tz}), set by "
            f"{escape(row.user_name)}.\nNext: {_local(row.schedule.next_due(now, tz), tz)}.")
    if row.sent is not None:
        text += f" The last went out {_local(row.sent, tz)}."
    if row.failed:
        text += f"\n⚠️ The last could not be delivered: {escape(row.failed)}"
    return text + "\n/digest off stops it."


def set_text(schedule: Schedule, thread_id: int | None, now: float, tz: tzinfo) -> str:
    return (f"📰 {_here(thread_id).capitalize()} gets a digest {schedule.describe()} ({tz}): what happened since "
            f"the last one, what is still open and where the fleet is heading. The first: "
            f"{_local(schedule.next_due(now, tz), tz)}. /digest off stops it.")


def off_text(removed: bool, thread_id: int | None) -> str:
    if removed:
        return f"📭 {_here(thread_id).capitalize()} gets no more digests."
    return f"{_here(thread_id).capitalize()} had no digest."


async def digest_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/digest daily 09:00, /digest weekly mon 09:00, /digest off (admins); /digest alone shows the schedule."""
    tz = common.settings_of(context).timezone
    args, chat, thread = context.args or [], update.effective_chat.id, common.thread_of(update)
    if not args:
        row = await asyncio.to_thread(digests.schedule_of, chat, thread)
        await update.effective_message.reply_text(schedule_text(row, thread, time.time(), tz),
                                                  parse_mode=ParseMode.HTML)
        return
    if not await common.is_admin(update, context, "/digest"):
        return
    if len(args) == 1 and args[0].lower() == "off":
        removed = await asyncio.to_thread(digests.remove, chat, thread)
        await update.effective_message.reply_text(off_text(removed, thread))
        return
    try:
        schedule = Schedule.parse(args)
    except ValueError as exc:
        await update.effective_message.reply_text(f"{exc}.\n{usage(tz)}")
        return
    user_id, name = common.who(update)
    await asyncio.to_thread(digests.set_schedule, chat, thread, schedule, user_id, name, tz)
    log.info("%s set the digest of chat %d topic %s to %s", name, chat, thread, schedule.describe())
    await update.effective_message.reply_text(set_text(schedule, thread, time.time(), tz))


def _durations(what: str, seconds: list[float], of: int) -> str:
    """'Answered 8 of 14: median 4 min, worst 2 h 5 min': how many, and how long it took them."""
    if not seconds:
        return f"{what} none of {of}"
    return f"{what} {len(seconds)} of {of}: median {ago(statistics.median(seconds))}, worst {ago(max(seconds))}"


def _more(lines: list[str], shown: int = SHOWN) -> list[str]:
    return lines[:shown] + ([f"… and {len(lines) - shown} more"] if len(lines) > shown else [])


def _open_line(incident: Incident, now: float) -> str:
    """'🛠 db3: RAID array degraded (md0) for 1 d': an open incident and how long it has been open."""
    icon = KINDS[incident.kind][0]
    what = ""
    if incident.kind == Kind.CONDITION:
        what = f": {escape(tolerance_word(incident.detail.metric))}"
    elif incident.kind == Kind.FORECAST:
        what = f": {escape(forecast_word(incident.detail.metric or incident.metric))}"
    return f"{icon} {escape(incident.device)}{what} for {ago(now - incident.opened_ts)}"


def incidents_part(period: Period) -> list[str]:
    """How many incidents of each kind opened, the machines that had the most, and how fast they were answered and
    recovered."""
    if not period.opened:
        return ["<b>No incident</b> in this period."]
    lines = [f"<b>{plural(len(period.opened), 'incident')}</b>"]
    for kind, (icon, one, many) in KINDS.items():
        worst = period.worst_by(kind, 3)
        if worst:
            count = sum(1 for k, _ in period.opened if k == kind)
            machines = ", ".join(f"{escape(device)}" + (f" ×{n}" if n > 1 else "") for device, n in worst)
            lines.append(f"{icon} {count} {one if count == 1 else many}: {machines}")
    lines.append("⏱ " + _durations("Answered", period.answers, len(period.opened)))
    lines.append("✅ " + _durations("Recovered", period.recoveries, len(period.opened)))
    return lines


def open_part(period: Period, now: float) -> list[str]:
    """What is still open, oldest first, and the machines silent now."""
    if not period.still_open:
        return ["<b>Nothing is open.</b>"]
    silent = [i.device for i in period.still_open if i.kind == Kind.SILENT]
    lines = [f"<b>Still open: {len(period.still_open)}</b>"]
    lines += _more([_open_line(i, now) for i in period.still_open if i.kind != Kind.SILENT])
    if silent:
        lines.append(f"⚪ Silent now: {escape(', '.join(_more(silent, 10)))}")
    return lines


def heading_part(forecasts: list[Forecast]) -> list[str]:
    """The machines heading for full within a week, soonest first."""
    if not forecasts:
        return []
    lines = [f"<b>Heading for full within {HEADING_S // 86400} d</b>"]
    return lines + _more([f"📈 {escape(f.device)}: {escape(forecast_line(f))}"
                          for f in sorted(forecasts, key=lambda f: f.eta_s or 0.0)])


def taught_part(period: Period) -> list[str]:
    """Tolerances and expected conditions added in the period, and the labels given."""
    lines = [f"{escape(t.device)}: {escape(tolerance_word(t.metric))} up to {tolerance_value(t.metric, t.value)} "
             f"({escape(t.user_name)})" for t in period.tolerances]
    lines += [f"{escape(e.device)}: {escape(tolerance_word(e.metric))} expected ({escape(e.user_name)})"
              for e in period.expected]
    out = ["<b>Taught with ❌</b>", *_more(lines)] if lines else []
    if period.labels:
        right = sum(value for value, _ in period.labels)
        who = ", ".join(sorted({name for _, name in period.labels}))
        out.append(f"🏷 {plural(len(period.labels), 'label')} given ({right} ✅, {len(period.labels) - right} ❌) "
                   f"by {escape(who)}")
    return out


def model_part(version: int | None, record: ModelVersion | None) -> list[str]:
    """The model in use and how it scored on its holdout, in the words of /versions."""
    if version is None:
        return ["🧠 No model is loaded."]
    if record is None:
        return [f"🧠 Model v{version} (the model store did not answer for its figures)"]
    return [f"🧠 Model v{version} · {escape(holdout(record))}", escape(scores(record))]


def digest_text(schedule: Schedule, due: float, late: str, period: Period, forecasts: list[Forecast],
                model: list[str], tz: tzinfo) -> str:
    """The whole digest: short lines that read on a phone, the empty parts left out."""
    every = "Daily" if schedule.weekday is None else "Weekly"
    head = [f"📰 <b>{every} digest</b>, {_local(due, tz)} ({tz})"]
    if late:
        head.append(f"⏰ Sent late: {late}.")
    head.append(f"Since {_local(period.start, tz)}:")
    parts = [head, incidents_part(period), open_part(period, period.end), heading_part(forecasts),
             taught_part(period), model]
    return clip("\n\n".join("\n".join(part) for part in parts if part))


def late_reason(due: float, now: float, started: float, tz: tzinfo) -> str:
    """Why a digest goes out after its time ('' when it does not): the bot was not running, or Telegram (or the
    database) did not let it out then."""
    if now - due <= LATE_S:
        return ""
    at = datetime.fromtimestamp(due, tz).strftime("%H:%M")
    if started > due:
        return f"the bot was not running at {at}"
    return f"it could not be sent at {at}"


@dataclass(frozen=True)
class Digesting:
    """The digest job's data: the settings (the time zone, the allowed chats), this process's forecasts and model,
    and when this process started (a digest due before that was missed because the bot was not running)."""

    settings: Settings
    forecaster: Forecaster
    model: ActiveModel
    started: float


def _model_record(model: ActiveModel) -> ModelVersion | None:
    version = model.version
    if version is None:
        return None
    try:
        return model.store.get(version)
    except StoreError as exc:  # the store is away: the digest goes out without the figures
        log.warning("the digest shows model v%d without its figures: %s", version, exc)
        return None


def compose(digesting: Digesting, row: Digest, due: float, now: float) -> tuple[str, bytes]:
    """The digest of the period from where the last one ended (the period before `due` for the first) to now,
    and its picture. Reads the database and the model store: it blocks."""
    tz = digesting.settings.timezone
    start = row.covered_until or row.schedule.previous_due(due, tz)
    period = digests.period(start, now)
    model = model_part(digesting.model.version, _model_record(digesting.model))
    text = digest_text(row.schedule, due, late_reason(due, now, digesting.started, tz), period,
                       digesting.forecaster.reaching(HEADING_S), model, tz)
    days = day_starts(now, tz, CHART_DAYS)
    counts = digests.per_day([start for _, start in days], now)
    png = charts.incidents_per_day([day for day, _ in days], counts, f"Incidents a day, last {CHART_DAYS} days ({tz})")
    return text, png


async def deliver(bot: Bot, chat_id: int, thread_id: int | None, text: str, png: bytes) -> None:
    """The digest as a photo with its text as the caption when it fits; else the text, then the photo replying to
    it. Not urgent: it waits behind the alerts in a busy group. Raises SendFailed when the text did not go out;
    a photo that fails after its text is said in the log only (sending the text again would repeat it)."""
    if len(text) <= MessageLimit.CAPTION_LENGTH:
        await classified(bot.send_photo(chat_id, png, caption=text, parse_mode=ParseMode.HTML,
                                        message_thread_id=thread_id, filename="digest.png",
                                        read_timeout=SEND_TIMEOUT_S, write_timeout=SEND_TIMEOUT_S))
        return
    message = await classified(bot.send_message(chat_id, text, parse_mode=ParseMode.HTML, message_thread_id=thread_id,
                                                read_timeout=SEND_TIMEOUT_S, write_timeout=SEND_TIMEOUT_S))
    try:
        await classified(bot.send_photo(chat_id, png, reply_parameters=ReplyParameters(message.message_id),
                                        message_thread_id=thread_id, filename="digest.png",
                                        read_timeout=SEND_TIMEOUT_S, write_timeout=SEND_TIMEOUT_S))
    except SendFailed as exc:
        log.warning("the digest of chat %d went out without its picture: %s", chat_id, exc.message)


async def send_due(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every digest whose newest period is due and not sent by any process: claimed, sent, marked sent. A
    Telegram outage or flood limit lets the period go for the next run; a chat that can never take it gives it
    up."""
    digesting: Digesting = context.job.data
    if digesting.forecaster.restoring:  # the forecasts it names are still coming back after the start
        return
    tz, now = digesting.settings.timezone, time.time()
    for row in await asyncio.to_thread(digests.every):
        due = row.schedule.last_due(now, tz)
        if row.chat_id not in digesting.settings.allowed_chat_ids or (
                row.last_due is not None and row.last_due >= due):
            continue
        claimed = await asyncio.to_thread(digests.claim, row.id, due)
        if claimed is None:
            continue
        try:
            text, png = await asyncio.to_thread(compose, digesting, claimed, due, now)
            await deliver(context.bot, row.chat_id, row.thread_id or None, text, png)
        except SendFailed as exc:
            if exc.failure == Failure.PERMANENT:
                log.error("the digest of chat %d cannot be delivered (%s); tried again next period", row.chat_id,
                          exc.message)
                await asyncio.to_thread(digests.record_failed, row.id, due, exc.message)
            else:
                log.warning("the digest of chat %d waits (%s); tried again shortly", row.chat_id, exc.message)
                await asyncio.to_thread(digests.release, row.id)
            continue
        except Exception:  # a bug: this period stays claimed a while (a backoff); the other chats go on
            log.exception("the digest of chat %d failed", row.chat_id)
            continue
        await asyncio.to_thread(digests.record_sent, row.id, due, now)
        log.info("sent the digest due %s to chat %d%s", _local(due, tz), row.chat_id,
                 " (late)" if now - due > LATE_S else "")


def handlers() -> list[BaseHandler]:
    return [CommandHandler("digest", digest_command)]
