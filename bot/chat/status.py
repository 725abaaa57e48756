"""/status, /chart and /rejected: the fleet in one message, one machine as a table with its usual ranges and
forecast, its chart, and the messages that broke the wire format; the ⚠️ button under a machine's status."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Container, Mapping, Sequence, Set

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, ContextTypes

from agent.vocabulary import DEVICE_RE, KNOWN_METRICS, disk_source
from bot import db
from bot.chat import callbacks, charts, common, tolerance
from bot.chat.forecasts import forecast_summary
from bot.chat.formatting import (
    ago,
    disk_label,
    escape,
    fullest,
    metric_value,
    percent,
    plural,
    pre,
    severity_icon,
    span,
    top_processes,
    usual_range,
    when,
)
from bot.db import DiskDay, Expected, Incident, Rejected, Seen, StoredSample, Tolerance, tolerances
from bot.intake.sources import Unassigned
from bot.pipeline.baselines import Usual
from bot.pipeline.forecast import Forecast
from ml.features import FEATURES
from schema.domain import FILESYSTEM, PATTERN_RE, matches

log = logging.getLogger(__name__)
CHART_MARGIN_S = 15 * 60  # the chart of an incident shows this much before and after it


USUAL_WAIT_S = 0.05  # from its start /status <device> waits at most this long for usual ranges never worked out
STATUS_CHART_HOURS = 2  # the chart under /status <device>, and /chart <device> without hours
CHART_MAX_HOURS = 720  # 30 days; the chart's query returns at most db.CHART_POINTS rows whatever the window


def _chart_hours(args: list[str]) -> int | None:
    """The window of /chart <device> [hours] in hours, or None when the arguments are not that."""
    if not 1 <= len(args) <= 2 or not DEVICE_RE.fullmatch(args[0]):
        return None
    if len(args) == 1:
        return STATUS_CHART_HOURS
    hours = int(args[1]) if re.fullmatch(r"\d{1,4}", args[1]) else 0
    return hours if 1 <= hours <= CHART_MAX_HOURS else None


TOP_WORDS = {"cpu": "Top CPU", "memory": "Top memory"}  # under /status <device>
TABLE_LABEL = 24  # characters of a metric's label in /status <device>'s table


# Most urgent first: the order of /status and of its counts. A muted machine (under maintenance) is still
# worth a look, but no longer news.
# A machine with an open condition (a failed unit, a degraded array) needs a look before the quiet ones.
RISK_ORDER = ("stressed", "silent", "problem", "muted", "normal", "unknown")


STATE_ICONS = {"stressed": "🔴", "silent": "⚪", "problem": "🛠", "muted": "🔕", "normal": "🟢", "unknown": "❔"}
NONE: frozenset[str] = frozenset()


def condition(sample: StoredSample | Seen, threshold: float, silent: Set[str] = NONE, muted: Container[str] = NONE,
              problems: Container[str] = NONE) -> str:
    """stressed, silent (it stopped reporting), problem (an open condition), muted, normal or unknown (no
    prediction yet)."""
    if sample.device in muted:
        return "muted"
    if sample.device in silent:  # an open silence incident: see SILENT_AFTER
        return "silent"
    if sample.p_stressed is not None and sample.p_stressed >= threshold:
        return "stressed"
    if sample.device in problems:
        return "problem"
    return "unknown" if sample.p_stressed is None else "normal"


def state(sample: StoredSample | Seen, threshold: float, silent: Set[str] = NONE, muted: Container[str] = NONE,
          problems: Container[str] = NONE) -> str:
    """The condition with its icon, e.g. '🔴 stressed'."""
    name = condition(sample, threshold, silent, muted, problems)
    return f"{STATE_ICONS[name]} {name}"


OVERVIEW_ROWS = 25  # the worst machines shown by /status; the rest are counted


def overview(samples: Sequence[StoredSample | Seen], threshold: float, now: float | None = None,
             silent: Set[str] = NONE, muted: Container[str] = NONE, problems: Container[str] = NONE) -> str:
    """/status: the counts per condition, then the worst machines with last seen, latest P(stressed) and
    state, most urgent first (by condition, then P(stressed), then name); one message for any fleet."""
    if not samples:
        return "No machine has reported yet."
    now = time.time() if now is None else now
    rank = {name: index for index, name in enumerate(RISK_ORDER)}
    conditions = {s.device: condition(s, threshold, silent, muted, problems) for s in samples}
    ranked = sorted(samples, key=lambda s: (
        rank[conditions[s.device]], -(s.p_stressed if s.p_stressed is not None else -1.0), s.device))

    def counts(part: Sequence[StoredSample | Seen]) -> str:  # '3 stressed, 2 silent, 995 normal'; zeros left out
        found = Counter(conditions[s.device] for s in part)
        return ", ".join(f"{found[name]:,} {name}" for name in RISK_ORDER if found[name])

    shown, hidden = ranked[:OVERVIEW_ROWS], ranked[OVERVIEW_ROWS:]
    seen = [f"{ago(now - s.ts)} ago" for s in shown]
    width, seen_width = max(6, *(len(s.device) for s in shown)), max(9, *map(len, seen))
    rows = [f"{'device':<{width}}  {'last seen':>{seen_width}}  P(stressed)  state"]
    rows += [
        f"{s.device:<{width}}  {last:>{seen_width}}  {percent(s.p_stressed):>11}  "
        f"{STATE_ICONS[conditions[s.device]]} {conditions[s.device]}"
        for s, last in zip(shown, seen, strict=True)
    ]
    text = f"<b>Fleet: {plural(len(samples), 'machine')}</b> — {counts(samples)}\n{pre(rows)}"
    if hidden:
        text += f"\n… and {len(hidden):,} more: {counts(hidden)}"
    return text


def unassigned_notice(unassigned: Unassigned, now: float | None = None) -> str:
    """What /status says first while this bot's Kafka consumer has had no partition of its topic for a while."""
    now = time.time() if now is None else now
    topic, since = escape(unassigned.topic), ago(now - unassigned.since)
    if unassigned.partitions is None:
        return (f"⚠️ Kafka topic <code>{topic}</code> does not exist (for {since}): no metrics arrive through it "
                "until it is created, and I read it within seconds of that.")
    return (f"⚠️ For {since} I have read no partition of Kafka topic <code>{topic}</code> "
            f"({plural(unassigned.partitions, 'partition')}): its consumer group "
            f"<code>{escape(unassigned.group)}</code> has not settled, or more bot processes share the group than the "
            "topic has partitions.")


def device_status(
    sample: StoredSample, threshold: float, active_version: int | None, now: float | None = None,
    usual: Mapping[str, Usual] | None = None, forecasts: Mapping[str, Forecast | None] | None = None,
    horizon_s: float = 4 * 3600, silent: Set[str] = NONE, muted: Container[str] = NONE,
    tolerances: list[Tolerance] | None = None, problems: list[Incident] | None = None,
    expected: list[Expected] | None = None, disks: list[DiskDay] | None = None, restoring: bool = False,
    usual_pending: bool = False,
) -> str:
    """/status <device>: the latest sample as a table with each metric's usual range (or, `usual_pending`, a word
    that they are being worked out), its prediction, the model version, its open conditions, what it could not
    read, what it tolerates and where disk, memory and swap are heading (unless its trends are still being read
    back after a start, `restoring`)."""
    now = time.time() if now is None else now
    usual = usual or {}
    ranged = not usual_pending
    names = [n for n in KNOWN_METRICS if n in sample.metrics] + sorted(set(sample.metrics) - set(KNOWN_METRICS))
    rows = []
    for name in names:
        if name == "disk_percent" and sample.filesystems:
            rows += _filesystem_rows(sample.metrics[name], sample.filesystems, usual, ranged)
        else:
            rows.append(_table_row(name, sample.metrics[name], usual, ranged=ranged))
    version = f"v{sample.model_version}" if sample.model_version else "none"
    tops = [f"{TOP_WORDS[kind]}: {escape(top_processes(top))}" for kind, top in (sample.processes or {}).items()
            if kind in TOP_WORDS and top]
    return (
        f"<b>{escape(sample.device)}</b>: "
        f"{state(sample, threshold, silent, muted, {sample.device} if problems else NONE)}\n"
        f"Sample of {when(sample.ts)} ({ago(now - sample.ts)} ago)\n"
        f"P(stressed) {percent(sample.p_stressed)} by model {version}; active model "
        f"{'v' + str(active_version) if active_version else 'none'}\n"
        f"{pre(rows or ['(no metrics)'])}\n"
        + (f"{USUAL_PENDING}\n" if usual_pending else "")
        + "".join(f"{line}\n" for line in tops)
        + _problems(problems or [], now)
        + (f"Disks:\n{pre(disk_lines(disks, sample.unreadable))}\n" if disks else "")
        + _unreadable(sample.unreadable)
        + tolerance.tolerates(tolerances or [], expected)
        + forecast_summary(forecasts or {}, horizon_s, restoring)
    )


def _problems(incidents: list[Incident], now: float) -> str:
    """Under /status <device>: its open conditions, a line each, with since when."""
    return "".join(f"{severity_icon(i.detail.severity)} {escape(i.detail.evidence)} (since {ago(now - i.opened_ts)})\n"
                   for i in incidents)


def _unreadable(unreadable: Mapping[str, str] | None) -> str:
    """'Not readable here: systemd (no systemd on this machine)': what it cannot check, never taken for fine."""
    if not unreadable:
        return ""
    return "Not readable here: " + ", ".join(f"{escape(source)} ({escape(why)})"
                                              for source, why in sorted(unreadable.items())) + "\n"


FLEET_DISKS = 20  # the riskiest disks /disks lists


def fleet_disks(rows: list[DiskDay]) -> str:
    """/disks: the fleet's riskiest disks, with what drove each one's P."""
    if not rows:
        return ("No disk has reported SMART yet: the agent reads it as root (or with CAP_SYS_RAWIO), and Prometheus "
                "can remote-write smartctl_exporter's series.")
    lines = [f"{row.device} {line}" for row, line in zip(rows[:FLEET_DISKS], disk_lines(rows[:FLEET_DISKS]),
                                                           strict=True)]
    more = f"\n… and {len(rows) - FLEET_DISKS:,} more" if len(rows) > FLEET_DISKS else ""
    head = f"<b>Disks: {plural(len(rows), 'disk')}</b>, the riskiest first (P: fails within 30 days)"
    return f"{head}\n{pre(lines)}{more}"


async def disks_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/disks: the fleet's riskiest disks."""
    rows = await asyncio.to_thread(db.disks.latest)
    await update.effective_message.reply_text(fleet_disks(rows), parse_mode=ParseMode.HTML)


def disk_lines(rows: list[DiskDay], unreadable: Mapping[str, str] | None = None) -> list[str]:
    """'sdb ST3000DM001 Z1F0ABCD: P 64 % ⚠️ reallocated sectors 0 → 48 in 6 days': each disk, riskiest first; one
    whose SMART its machine's latest sample could not read (`unreadable`) says so, its verdict being an older one."""
    lines = []
    for row in rows:
        risk = "no verdict yet" if row.p is None else f"P {100 * row.p:.1f} %{' ⚠️' if row.alert else ''}"
        why = f" · {row.explanation}" if row.explanation and row.alert else ""
        unread = " · not readable now" if disk_source(row.disk) in (unreadable or {}) else ""
        lines.append(f"{row.disk} {row.model or '?'} {row.serial}: {risk}{why}{unread}")
    return lines


def _cut(label: str) -> str:
    """A label that fits the table: a long mount point keeps its end, which tells it apart."""
    return label if len(label) <= TABLE_LABEL else f"{label[:6]}…{label[-(TABLE_LABEL - 7):]}"


def _table_row(name: str, value: float, usual: Mapping[str, Usual], label: str | None = None,
               ranged: bool = True) -> str:
    label = KNOWN_METRICS.get(name, (name, ""))[0] if label is None else label
    row = f"{_cut(label):<{TABLE_LABEL}} {metric_value(name, value, label)[len(label):].strip()}"
    if name not in FEATURES or not ranged:
        return row
    return f"{row:<35} {'usually ' if name in usual else ''}{usual_range(name, usual.get(name))}"


def _filesystem_rows(disk: float, filesystems: Mapping[str, float], usual: Mapping[str, Usual],
                     ranged: bool = True) -> list[str]:
    """One row per filesystem, by mount point, each with its own usual range (before a machine has one per
    filesystem: the fullest with the disk's)."""
    top = fullest(filesystems)
    rows = []
    for mount, used in sorted(filesystems.items()):
        own = usual.get(FILESYSTEM + mount)
        ranges = {"disk_percent": own} if own is not None else usual if mount == top else {}
        rows.append(_table_row("disk_percent", disk if mount == top else used, ranges, disk_label(mount),
                               ranged and (own is not None or mount == top)))
    return rows


CHART_FULLEST_DISK = "Disk (fullest)"  # the legend of a chart's disk line when the machine reports filesystems


def chart_disk(filesystems: Mapping[str, float] | None) -> str:
    """The legend of a chart's disk line: the fullest filesystem, when the machine reports them."""
    return CHART_FULLEST_DISK if filesystems else "Disk"


def chart_caption(device: str, start: float, end: float, fullest_now: str | None = None) -> str:
    """The caption of a chart: the machine, the window, which disk is drawn and what the shading means."""
    disk = "disk" if fullest_now is None else f"the fullest disk (now {escape(fullest_now)})"
    return (f"<b>{escape(device)}</b>, {span(start, end)} ({ago(end - start)}): CPU, memory, swap and {disk} in %, "
            "P(stressed) below; incidents shaded")


def no_chart_data(device: str, span_s: float, latest_ts: float, now: float | None = None) -> str:
    """The reply to /chart for a window in which the machine sent nothing."""
    now = time.time() if now is None else now
    return (
        f"<b>{escape(device)}</b> sent nothing in the last {ago(span_s)}: its latest sample is from "
        f"{when(latest_ts)} ({ago(now - latest_ts)} ago)."
    )


def unknown_device(device: str, known: list[str]) -> str:
    """The reply to /status for a device that never reported."""
    listing = ", ".join(escape(name) for name in known[:50]) or "none yet"
    return f"I don't know a device called <b>{escape(device[:64])}</b>. Known devices: {listing}"


def rejected(rows: list[Rejected]) -> str:
    """/rejected: the latest messages that broke the wire format, with their reasons."""
    if not rows:
        return "No message has been rejected."
    lines = [f"{when(r.received)}  {r.source}  {r.size} B\n  {r.reason}" for r in rows]
    return f"<b>Latest rejected messages</b> (newest first)\n{pre(lines)}"


def missed_keyboard(sample: StoredSample, chat_id: int, key: bytes) -> InlineKeyboardMarkup:
    """Under /status <device>: a way to say the model missed a problem with this sample."""
    data = callbacks.missed(sample.id, sample.ts, chat_id, key)
    return InlineKeyboardMarkup([[InlineKeyboardButton("⚠️ Something is wrong here", callback_data=data)]])


USUAL_PENDING = "Usual ranges: being worked out from the last 7 days, they appear here in a moment."


def missed_labelled(sample: StoredSample) -> str:
    return (f"Thanks: {sample.device} at {when(sample.ts)} is labelled stressed; the next /retrain learns "
            "from it.")


STATUS_USAGE = "Usage: /status, /status <device> or /status <pattern>, e.g. /status web*"


def chart_usage(max_hours: int) -> str:
    return f"Usage: /chart <device> [hours], hours from 1 to {max_hours}, e.g. /chart pc1 6"


def no_match(pattern: str) -> str:
    return f"No machine matches {pattern}."


async def status_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/status for the fleet, /status <device> for one machine, /status <pattern> for the machines matching."""
    settings = common.settings_of(context)
    args = context.args or []
    if len(args) > 1 or (args and not PATTERN_RE.fullmatch(args[0])):
        await update.effective_message.reply_text(STATUS_USAGE)
        return
    answer_by = time.monotonic() + USUAL_WAIT_S
    markup = None
    sample = None
    working: asyncio.Future[dict[str, Usual]] | None = None  # a device's usual ranges being worked out
    if not args or not DEVICE_RE.fullmatch(args[0]):
        fleet, silent, muted, problems = await asyncio.to_thread(
            lambda: (db.seen_per_device(), db.silent_devices(), db.muting(time.time(), settings.timezone),
                     db.open_conditions()))
        if args:
            fleet = [s for s in fleet if matches(args[0], s.device)]
        text = overview(fleet, settings.alert_threshold, silent=silent, muted=muted, problems=problems) \
            if fleet or not args else no_match(args[0])
        poller = context.bot_data.get("poller")
        if poller is not None and poller.source.unassigned is not None:
            text = f"{unassigned_notice(poller.source.unassigned)}\n\n{text}"
    else:
        baselines = common.baselines_of(context)

        def newest() -> tuple[StoredSample | None, dict[str, Usual] | None]:
            found = db.latest_sample(args[0])
            return found, baselines.known(found.device) if found else None

        # Each hop to a thread waits its turn beside ingestion's on a busy bot: two hops, not one per read.
        sample, usual = await asyncio.to_thread(newest)
        if sample is None:
            known = [s.device for s in await asyncio.to_thread(db.seen_per_device)]
            text = unknown_device(args[0], known)
        else:
            if usual is None:  # never worked out: from its history, which can take a second on a big store
                working = asyncio.ensure_future(asyncio.to_thread(baselines.get, sample.device))
            forecaster = common.forecaster_of(context)
            forecasts, silent, muted, tolerated, expected, problems, disks = await asyncio.to_thread(
                lambda: (forecaster.forecasts(sample.device), db.silent_devices(),
                         db.muting(time.time(), settings.timezone),
                         tolerances.tolerances(sample.device), tolerances.expected(sample.device),
                         db.open_conditions(sample.device).get(sample.device, []), db.disks.latest(sample.device)))
            if working is not None and (await asyncio.wait({working}, timeout=max(0, answer_by - time.monotonic())))[0]:
                usual, working = working.result(), None

            def shown(usual: Mapping[str, Usual] | None) -> str:
                return device_status(sample, settings.alert_threshold, common.model_of(context).version,
                                     usual=usual, forecasts=forecasts, horizon_s=settings.forecast_hours * 3600,
                                     silent=silent, muted=muted, tolerances=tolerated, problems=problems,
                                     expected=expected, disks=disks, restoring=not forecaster.back(sample.device),
                                     usual_pending=usual is None)

            text = shown(usual)
            markup = missed_keyboard(sample, update.effective_chat.id, common.button_key(context))
    answer = await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    if sample is not None:
        end = time.time()
        if sample.ts >= end - STATUS_CHART_HOURS * 3600:
            await send_chart(update, context, sample.device, end - STATUS_CHART_HOURS * 3600, end)
        if working is not None:  # the answer did not wait for them: they are filled in once worked out
            usual = await working
            forecasts = await asyncio.to_thread(forecaster.forecasts, sample.device)  # trends read back meanwhile
            await common.edit(answer, shown(usual), markup)


async def chart_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/chart <device> [hours]: one machine's metrics and P(stressed) over the last hours, as a picture."""
    args = context.args or []
    hours = _chart_hours(args)
    if hours is None:
        await update.effective_message.reply_text(chart_usage(CHART_MAX_HOURS))
        return
    sample = await asyncio.to_thread(db.latest_sample, args[0])
    if sample is None:
        known = [s.device for s in await asyncio.to_thread(db.seen_per_device)]
        await update.effective_message.reply_text(unknown_device(args[0], known), parse_mode=ParseMode.HTML)
        return
    end = time.time()
    if sample.ts < end - hours * 3600:
        await update.effective_message.reply_text(no_chart_data(sample.device, hours * 3600, sample.ts),
                                                  parse_mode=ParseMode.HTML)
        return
    await send_chart(update, context, sample.device, end - hours * 3600, end)


async def send_chart(update: Update, context: ContextTypes.DEFAULT_TYPE, device: str, start: float,
                     end: float, reply_to: Message | None = None) -> None:
    """Reply with the chart of one device from `start` to `end`, its incidents shaded: to the update's message, or
    to `reply_to` (a report it illustrates)."""
    threshold = common.settings_of(context).alert_threshold

    def render() -> tuple[bytes, str | None]:  # queries and a drawing of a tenth of a second or more: off the loop
        latest = db.latest_sample(device)
        filesystems = latest.filesystems if latest else None
        png = charts.render_chart(device, start, end, threshold, db.incident_spans(device, start, end),
                                  chart_disk(filesystems))
        return png, fullest(filesystems)

    png, fullest_now = await asyncio.to_thread(render)
    await (reply_to or update.effective_message).reply_photo(
        png, caption=chart_caption(device, start, end, fullest_now), parse_mode=ParseMode.HTML,
        filename=f"{device}-{int(start)}.png", do_quote=True if reply_to else None,
    )


async def rejected_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/rejected: the latest invalid messages, so a sender can fix its script."""
    rows = await asyncio.to_thread(db.rejected)
    await update.effective_message.reply_text(rejected(rows), parse_mode=ParseMode.HTML)


def _pressed(metric_id: int, ts: float | None) -> StoredSample | None:
    """The sample of a ⚠️ button: by its id and time (its day's partition), or by its id on an older button."""
    return db.sample_by_id(metric_id) if ts is None else db.sample_at(metric_id, ts)


async def missed_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """⚠️ Something is wrong here, under /status <device>: the model missed a problem; label the sample stressed."""
    query = update.callback_query
    which = callbacks.parse_missed(query.data, update.effective_chat.id, common.button_key(context))
    sample = await asyncio.to_thread(_pressed, *which) if which is not None else None
    if sample is None:
        log.warning("ignored callback %r from user %d", query.data[:80], query.from_user.id)
        await query.answer(common.INVALID_BUTTON)
        return
    user_id, name = common.who(update)
    await asyncio.to_thread(db.add_label, sample.id, 1, user_id, name)
    await query.answer(missed_labelled(sample), show_alert=True)


def handlers() -> list[BaseHandler]:
    return [CommandHandler("status", status_command), CommandHandler("chart", chart_command),
            CommandHandler("disks", disks_command),
            CommandHandler("rejected", rejected_command),
            CallbackQueryHandler(missed_button, pattern=callbacks.MISSED_PATTERN)]
