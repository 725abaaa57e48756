"""/history and /report: the incidents of some machines over a period, and one incident's post-mortem (a Markdown
document with its summary, what drove it, its samples and everything that happened to it, then its chart), with
their words; the 📄 button of a finished incident sends the same report."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime, tzinfo

from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import BaseHandler, CommandHandler, ContextTypes

from agent.vocabulary import KNOWN_METRICS
from bot import db
from bot.chat import charts, common, forecasts, status, tolerance
from bot.chat.formatting import (
    ago,
    condition_of,
    described,
    disk_label,
    escape,
    fullest,
    lasted,
    metric_value,
    number,
    percent,
    top_processes,
    when,
)
from bot.chat.teams import DURATION_RE, DURATION_S
from bot.db import ChartSeries, Event, Incident
from bot.db import history as stored
from ml.features import FEATURES
from schema.domain import PATTERN_RE, Kind, State

log = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 7 * 86400
MAX_PERIOD_S = 90 * 86400
HISTORY_USAGE = ("Usage: /history <device or pattern> [period], e.g. /history web* 24h (a period like 24h or 7d; "
                 "7 d by default, at most 90 d)")
REPORT_USAGE = "Usage: /report <incident number>, e.g. /report 123 (/history lists the numbers)"
LISTED = 60  # incidents read in full for one /history message: more than its budget ever shows
BUDGET = 3800  # characters of the /history message, leaving room for its last line within Telegram's 4096
SHOWN_PRESSES = 3  # presses named in an incident's line of /history and in a report's summary
SAMPLES_MARGIN_S = 5 * 60  # a report's samples start this long before the incident and end this long after it
SAMPLE_ROWS = 30  # at most, whatever the incident's length: each row a sample, or the mean of a stretch
SAMPLE_METRICS = list(charts.METRICS)  # the chart's, plus whatever drove the incident
_NUMBER_RE = re.compile(r"#?(\d{1,18})")
_MARKDOWN_RE = re.compile(r"([\\`*_\[\]<>|])")  # what Markdown would read as markup in the middle of a line


def parse_history(args: list[str]) -> tuple[str, float] | None:
    """The pattern and the period (seconds) of /history <pattern> [period], or None when they are not that."""
    if not 1 <= len(args) <= 2 or not PATTERN_RE.fullmatch(args[0]):
        return None
    seconds = DEFAULT_PERIOD_S
    if len(args) == 2:
        match = DURATION_RE.fullmatch(args[1])
        if match is None:
            return None
        seconds = int(match[1]) * DURATION_S[match[2].lower()]
    return (args[0], float(seconds)) if 0 < seconds <= MAX_PERIOD_S else None


def parse_report(args: list[str]) -> int | None:
    """The incident number of /report <number> ('123' or '#123'), or None."""
    match = _NUMBER_RE.fullmatch(args[0]) if len(args) == 1 else None
    return int(match[1]) if match else None


def kind_of(incident: Incident) -> str:
    """What an incident was, in words: stressed, silent, a forecast of what, or its condition and object."""
    if incident.kind == Kind.CONDITION:
        return described(incident)
    if incident.kind == Kind.FORECAST and incident.detail.metric:
        return f"forecast of {forecasts.forecast_word(incident.detail.metric)}"
    return str(incident.kind)


def _end(incident: Incident) -> float:
    """When a finished incident ended (one closed without a resolution time: its last sample)."""
    return incident.resolved_ts or incident.last_ts


def how_long(incident: Incident, now: float) -> str:
    """'lasted 22 min', 'a false alarm after 3 min 20 s', 'open for 2 h 5 min'."""
    if incident.state == State.OPEN:
        return f"open for {ago(now - incident.opened_ts)}"
    took = lasted(_end(incident) - incident.opened_ts)
    return f"a false alarm after {took}" if incident.state == State.FALSE_ALARM else f"lasted {took}"


def answered(incident: Incident, presses: list[Event]) -> str:
    """Who answered and how, each press with how long after the alert: '@bob pressed correct after 45 s'. An
    incident from before presses were written down says who acknowledged it; one nobody answered says so."""
    if presses:
        said = [f"{p.text} after {lasted(p.at - incident.created)}" for p in presses[:SHOWN_PRESSES]]
        more = len(presses) - SHOWN_PRESSES
        return "; ".join(said) + (f"; and {more:,} more" if more > 0 else "")
    if incident.acked_by:
        verdict = "labelled a false alarm" if incident.state == State.FALSE_ALARM else "acknowledged"
        after = f" after {lasted(incident.acked_at - incident.created)}" if incident.acked_at else ""
        return f"{verdict} by {incident.acked_by}{after}"
    return "nobody answered"


def history_line(incident: Incident, presses: list[Event], now: float, tz: tzinfo) -> str:
    """One incident in /history: '#123 pc1 · stressed · 2026-11-28 14:03:25 UTC · lasted 22 min · @bob pressed
    correct after 45 s'."""
    return (f"#{incident.id} <b>{escape(incident.device)}</b> · {escape(kind_of(incident))} · "
            f"{when(incident.opened_ts, tz)} · {how_long(incident, now)} · {escape(answered(incident, presses))}")


def history(pattern: str, period_s: float, incidents: list[Incident], total: int,
            presses: dict[int, list[Event]], now: float, tz: tzinfo) -> str:
    """/history: the incidents of the machines matching, newest first, as many as one message holds, then how
    many more there are."""
    where = f"{escape(pattern)} in the last {ago(period_s)}"
    if not total:
        return f"No incident of {where}."
    text = f"<b>Incidents of {where}</b>: {total:,}, newest first\n"
    shown = 0
    for incident in incidents:
        line = history_line(incident, presses.get(incident.id, []), now, tz) + "\n"
        if len(text) + len(line) > BUDGET:
            break
        text += line
        shown += 1
    if shown < total:
        text += f"… and {total - shown:,} more (narrow the pattern or the period)\n"
    return text + "/report &lt;number&gt; sends one in full."


def no_incident(number: int) -> str:
    return f"No incident #{number}."


def still_open(number: int) -> str:
    """The answer to 📄 on an incident that is not over (a stale or forged button)."""
    return f"Incident #{number} is still open: its report comes once it is over (/report {number} for now)."


def md(text: str) -> str:
    """Text from outside (names, evidence, what people pressed) as Markdown that shows it as it is."""
    return _MARKDOWN_RE.sub(r"\\\1", text)


def _clock(ts: float, tz: tzinfo, dated: bool) -> str:
    """A row's time in the samples table: '14:03:25', or '11-28 14:03' when the table spans several days."""
    return datetime.fromtimestamp(ts, tz).strftime("%m-%d %H:%M" if dated else "%H:%M:%S")


def _summary(incident: Incident, presses: list[Event], now: float, tz: tzinfo) -> list[str]:
    if incident.state == State.OPEN:
        ended = "not yet"
    else:
        how = "labelled a false alarm" if incident.state == State.FALSE_ALARM else "resolved"
        ended = f"{when(_end(incident), tz)} ({how})"
    lines = [f"- **Machine:** {md(incident.device)}", f"- **Kind:** {md(kind_of(incident))}",
             f"- **Started:** {when(incident.opened_ts, tz)}", f"- **Ended:** {ended}",
             f"- **Duration:** {how_long(incident, now)}"]
    if incident.peak_p is not None:
        lines.append(f"- **Peak:** P(stressed) {percent(incident.peak_p)}")
    if incident.detail.severity:
        lines.append(f"- **Severity:** {md(incident.detail.severity)}")
    return [*lines, f"- **Answered:** {md(answered(incident, presses))}"]


def _metric_label(name: str, filesystems: dict[str, float]) -> str:
    mount = fullest(filesystems) if name == "disk_percent" else None
    return disk_label(mount) if mount else KNOWN_METRICS.get(name, (name, ""))[0]


def _value(name: str, value: float | None) -> str:
    """A metric's value with its unit, without its label: '99.5 %', '2 h 5 min'."""
    return "–" if value is None else md(metric_value(name, value, "").strip())


def _drivers(incident: Incident, tz: tzinfo) -> list[str]:
    """What drove it: the metrics at its worst and at its end (or now), a forecast's trend, a condition's
    evidence, a silence's stretch; what a ❌ made its machine tolerate or expect."""
    detail, device = incident.detail, md(incident.device)
    lines: list[str] = []
    if incident.kind == Kind.SILENT:
        until = f"to {when(incident.resolved_ts, tz)}" if incident.resolved_ts else "on"
        lines.append(f"{device} sent nothing from {when(incident.opened_ts, tz)} {until}.")
    elif incident.kind == Kind.FORECAST and detail.metric:
        eta = f": full {forecasts.how_soon(detail.eta_s)}" if detail.eta_s is not None else ""
        at = f" (the trend up to the sample of {when(detail.ts, tz)})" if detail.ts else ""
        word = forecasts.forecast_word(detail.metric)
        lines.append(f"{md(word[:1].upper() + word[1:])} was at {number(detail.level or 0)} % and moving "
                     f"{detail.slope_per_h or 0:+.1f} %/h{eta}{at}.")
    elif incident.kind == Kind.CONDITION:
        lines.append(f"- **Evidence:** {md(detail.evidence)}")
        if found := condition_of(incident):
            lines.append(f"- **What to do:** {md(found[0].todo)}")
        if detail.expected_by:
            lines.append(f"- {md(tolerance.expected_now(incident.device, kind_of(incident), detail.expected_by))}.")
    else:
        end = "now" if incident.state == State.OPEN else "at the end"
        names = [n for n in detail.drivers if n in detail.peak or n in detail.metrics] or [
            n for n in FEATURES if n in detail.peak][:3]
        if names:
            lines += [f"| metric | at its worst | {end} |", "|---|---:|---:|"]
        for name in names:
            label = _metric_label(name, detail.peak_filesystems or detail.filesystems)
            worst, last = _value(name, detail.peak.get(name)), _value(name, detail.metrics.get(name))
            lines.append(f"| {md(label)} | {worst} | {last} |")
        tops = [f"- {status.TOP_WORDS[kind]} at its worst: {md(top_processes(top))}"
                for kind, top in detail.peak_processes.items() if top and kind in status.TOP_WORDS]
        if tops:
            lines += ["", *tops]
        if detail.tolerated:
            lines += ["", f"{md(tolerance.tolerated_now(incident.device, detail.tolerated, incident.acked_by or ''))}."]
    if detail.undone_by:
        lines += ["", f"Undone by {md(detail.undone_by)}."]
    return lines or ["Nothing was recorded."]


def _samples(incident: Incident, series: ChartSeries, start: float, end: float, tz: tzinfo) -> list[str]:
    """The machine's samples around the incident as a table of at most SAMPLE_ROWS rows."""
    window = f"from {when(start, tz)} to {when(end, tz)}"
    if not series.points:
        return [f"No sample of {md(incident.device)} {window}."]
    names = [n for n in KNOWN_METRICS if any(n in p.metrics for p in series.points)]
    dated = datetime.fromtimestamp(start, tz).date() != datetime.fromtimestamp(end, tz).date()
    head = ["time", *(KNOWN_METRICS[n][0] for n in names), "P(stressed)"]
    rows = [f"| {' | '.join(head)} |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for point in series.points:
        values = [_value(n, point.metrics.get(n)) for n in names]
        rows.append(f"| {' | '.join([_clock(point.first_ts, tz, dated), *values, percent(point.p_stressed)])} |")
    each = (f"each row the mean of {ago(series.bucket_s)} of samples (P(stressed): the highest)" if series.bucket_s
            else "each row a sample")
    return [f"{md(incident.device)}'s samples {window}, {each}:", "", *rows]


def _event(event: Event, incident: Incident) -> str:
    """One event in words."""
    text, chat = md(event.text), event.chat_id
    match event.what:
        case "opened":
            return f"opened: {md(incident.device)} {md(kind_of(incident))}"
        case "sent":
            return f"{text} sent to chat {chat}"
        case "edited":
            return f"its message in chat {chat} edited {text}"
        case "grouped":
            return f"{text} in chat {chat}"
        case "reminded":
            return "reminded: nobody had answered yet"
        case "resolved":
            return f"resolved: {text}" if text else "resolved"
    return text or md(event.what)  # pressed ("@bob pressed correct"), escalated ("escalated to @alice …")


def report(incident: Incident, timeline: list[Event], series: ChartSeries, start: float, end: float, now: float,
           tz: tzinfo) -> str:
    """The post-mortem of one incident, in Markdown a person can read as it is: its summary, what drove it, the
    machine's samples from `start` to `end`, and everything that happened to it, in the bot's time zone."""
    presses = [e for e in timeline if e.what == "pressed"]
    title = f"# Incident #{incident.id}: {md(incident.device)} {md(kind_of(incident))}"
    events = [f"- {when(e.at, tz)}: {_event(e, incident)}" for e in timeline] or ["- Nothing was written down."]
    parts = [[title], ["## Summary", "", *_summary(incident, presses, now, tz)],
             ["## What drove it", "", *_drivers(incident, tz)],
             ["## Samples", "", *_samples(incident, series, start, end, tz)],
             ["## Timeline", "", *events],
             [f"_Written by Rigwatch at {when(now, tz)}._"]]
    return "\n\n".join("\n".join(part) for part in parts) + "\n"


def caption(incident: Incident, now: float, tz: tzinfo) -> str:
    """The caption of a report: the incident in one line."""
    return (f"📄 Incident #{incident.id}: <b>{escape(incident.device)}</b> {escape(kind_of(incident))}, "
            f"{when(incident.opened_ts, tz)}, {how_long(incident, now)}")


def filename(incident: Incident) -> str:
    return f"incident-{incident.id}-{incident.device}.md"


async def history_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/history <pattern> [period]: the incidents of the machines matching, newest first."""
    asked = parse_history(context.args or [])
    if asked is None:
        await update.effective_message.reply_text(HISTORY_USAGE)
        return
    pattern, period_s = asked
    now = time.time()

    def read() -> tuple[list[Incident], int, dict[int, list[Event]]]:
        incidents, total = stored.incidents_of(pattern, now - period_s, LISTED)
        return incidents, total, stored.presses([i.id for i in incidents])

    incidents, total, presses = await asyncio.to_thread(read)
    text = history(pattern, period_s, incidents, total, presses, now, common.settings_of(context).timezone)
    await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)


async def report_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/report <number>: one incident's post-mortem, as a document, and its chart."""
    number_asked = parse_report(context.args or [])
    if number_asked is None:
        await update.effective_message.reply_text(REPORT_USAGE)
        return
    incident = await asyncio.to_thread(stored.incident, number_asked)
    if incident is None:
        await update.effective_message.reply_text(no_incident(number_asked))
        return
    await send_report(update, context, incident)


async def report_button(update: Update, context: ContextTypes.DEFAULT_TYPE, incident: Incident) -> None:
    """📄 on a finished incident's message: its report, in reply to it."""
    query = update.callback_query
    if incident.state == State.OPEN:
        await query.answer(still_open(incident.id), show_alert=True)
        return
    await query.answer(f"Sending the report of incident #{incident.id}…")
    await send_report(update, context, incident)


async def send_report(update: Update, context: ContextTypes.DEFAULT_TYPE, incident: Incident) -> None:
    """The report of an incident as a Markdown document, then its chart in reply to the document."""
    tz, now = common.settings_of(context).timezone, time.time()
    start = incident.opened_ts - SAMPLES_MARGIN_S
    end = (incident.resolved_ts or now) + SAMPLES_MARGIN_S
    metrics = SAMPLE_METRICS + [n for n in incident.detail.drivers if n in KNOWN_METRICS and n not in SAMPLE_METRICS]

    def write() -> str:  # its queries: off the loop
        series = stored.samples_around(incident.device, start, end, metrics, SAMPLE_ROWS)
        return report(incident, db.events.timeline(incident.id), series, start, end, now, tz)

    text = await asyncio.to_thread(write)
    document = await update.effective_message.reply_document(
        text.encode(), filename=filename(incident), caption=caption(incident, now, tz), parse_mode=ParseMode.HTML)
    log.info("report of incident %d (%s) sent to chat %d", incident.id, incident.device, update.effective_chat.id)
    await status.send_chart(update, context, incident.device, incident.opened_ts - status.CHART_MARGIN_S,
                            (incident.resolved_ts or now) + status.CHART_MARGIN_S, reply_to=document)


def handlers() -> list[BaseHandler]:
    return [CommandHandler("history", history_command), CommandHandler("report", report_command)]
