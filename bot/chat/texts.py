"""What the bot says: pure functions from data to HTML text and keyboards, so tests need no bot. What it says
about retrains, versions and the model is in bot/chat/model_texts.py; the small words every text is made of
(escaping, times, values) are in bot/chat/words.py."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Container, Mapping, Set
from datetime import UTC, datetime

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

from agent.vocabulary import KNOWN_METRICS
from bot.chat import callbacks, forecast_texts, tolerance_texts
from bot.chat.words import (
    ago,
    clip,
    disk_label,
    escape,
    fullest,
    lasted,
    metric_value,
    percent,
    plural,
    pre,
    top_processes,
    usual_range,
    when,
)
from bot.db import Incident, Rejected, StoredSample, Tolerance
from bot.pipeline.baselines import Usual
from bot.pipeline.forecast import Forecast
from ml.features import FEATURES
from schema.domain import SNOOZE_HOURS, Action, Kind, Reply, State

# The top processes an alert shows beside a metric that drives it: CPU for what busy CPUs cause, memory for
# memory and swap.
TOP_OF = {"cpu_percent": "cpu", "load_1m": "cpu", "cpu_temp_c": "cpu", "mem_percent": "memory",
          "swap_percent": "memory"}
TOP_WORDS = {"cpu": "Top CPU", "memory": "Top memory"}  # under /status <device>
TABLE_LABEL = 24  # characters of a metric's label in /status <device>'s table

HELP = """<b>Rigwatch</b> watches your machines and warns here when one is likely to need a technical \
intervention (it is <i>stressed</i>), when its disk, memory or swap is heading for full, and when it stops \
reporting.

/status: every machine, the riskiest first
/status &lt;device&gt;: one machine: its latest sample, usual ranges, forecast and a chart of its last 2 hours
/chart &lt;device&gt; [hours]: a chart of one machine over the last hours (1 to 720; 2 by default)
/status &lt;pattern&gt;: the machines whose names match, e.g. /status web*
/mute &lt;pattern&gt; [duration] [reason]: no alerts for machines under maintenance (default 1 h), e.g. \
/mute web* 2h deploy
/mute &lt;pattern&gt; &lt;days&gt; &lt;hh:mm-hh:mm&gt; [reason]: a recurring window, e.g. /mute db1 daily 02:00-03:00 \
backups or /mute db* sun 01:00-05:00
/unmute &lt;pattern&gt;, /muted: end a mute; list the mutes and windows
/subscribe &lt;pattern&gt;…: this chat (or forum topic) gets only the messages about these machines
/unsubscribe [pattern…], /subscriptions: remove some or all; list them
/tolerance &lt;device&gt;: what a ❌ taught that machine (metrics it tolerates higher than the fleet)
/tolerance &lt;device&gt; reset [metric]: forget them (admins, or whoever set it), e.g. /tolerance build1 reset disk
/rejected: the latest messages that broke the wire format, and why
/versions [version]: the model versions, newest first; one in full with its calibration
/retrain: train a new model from the data and your labels (admins)
/rollback [version]: go back to the previous or a given model version (admins)
/help: this message

An alert is one message, edited while the incident lasts and marked when it recovers. When several machines \
change together (an outage, a storm) they share one message, with a button per machine for its own alert. Its buttons: \
<b>✅ Correct</b> acknowledges it (no more reminders) and stores a label; <b>❌ Wrong prediction</b> stores \
the sample as normal, closes the alert and, at once, makes that machine tolerate the values that drove it (up \
to each metric's hard ceiling; <b>↩️ Undo</b> takes it back); <b>🔕</b> snoozes its reminders. The next model \
learns from your labels. A forecast has its own buttons: <b>❌ Wrong forecast</b> stops that forecast on that \
machine until the metric is back in its usual range."""


COMMANDS = [  # the command menu
    BotCommand("status", "every machine, or /status <device> for one"),
    BotCommand("chart", "a chart of one machine: /chart <device> [hours]"),
    BotCommand("mute", "no alerts for machines under maintenance: /mute <pattern> 2h"),
    BotCommand("muted", "the mutes and maintenance windows"),
    BotCommand("subscribe", "this chat or topic gets only these machines: /subscribe web*"),
    BotCommand("subscriptions", "what this chat is subscribed to"),
    BotCommand("tolerance", "what a ❌ taught a machine: /tolerance <device> [reset [metric]]"),
    BotCommand("rejected", "latest invalid messages and why"),
    BotCommand("versions", "model versions, or /versions <n> for one in full"),
    BotCommand("retrain", "train a new model from data and labels (admins)"),
    BotCommand("rollback", "go back to an earlier model version (admins)"),
    BotCommand("help", "what this bot does"),
]


def _label(name: str, filesystems: Mapping[str, float] | None) -> str | None:
    """The label of a metric in a sample: the disk is named by its fullest filesystem's mount point."""
    mount = fullest(filesystems) if name == "disk_percent" else None
    return None if mount is None else disk_label(mount)


def _with_usual(name: str, value: float, usual: Mapping[str, Usual], device: str,
                filesystems: Mapping[str, float] | None = None, processes: Mapping[str, list] | None = None,
                when_shown: str = "", tolerated: Mapping[str, float] | None = None) -> str:
    """'Disk /data 99.4 % (usually 40-55 % on pc1)', 'Memory 98.5 % (usually 45-52 % on pc1) · top: java 61 %
    (pid 4121), postgres 12 %'; a metric the model does not use gets no range, a metric the machine tolerates
    says so instead ('Disk 99.2 % (tolerated up to 98.6 % on build1)'). `when_shown` (' at its worst') follows
    the value and its range."""
    shown = metric_value(name, value, _label(name, filesystems))
    if name not in FEATURES:
        return shown + when_shown
    if tolerated and name in tolerated:
        shown = f"{shown} {tolerance_texts.tolerated_up_to(name, value, tolerated[name], device)}{when_shown}"
    elif name not in usual:
        shown = f"{shown} (no usual range yet){when_shown}"
    else:
        shown = f"{shown} (usually {usual_range(name, usual[name])} on {device}){when_shown}"
    kind = TOP_OF.get(name)
    if kind and (top := top_processes((processes or {}).get(kind))):
        shown += f" · top{' memory' if name == 'swap_percent' else ''}: {top}"
    return shown


# Most urgent first: the order of /status and of its counts. A muted machine (under maintenance) is still
# worth a look, but no longer news.
RISK_ORDER = ("stressed", "silent", "muted", "normal", "unknown")
STATE_ICONS = {"stressed": "🔴", "silent": "⚪", "muted": "🔕", "normal": "🟢", "unknown": "❔"}
NONE: frozenset[str] = frozenset()


def condition(sample: StoredSample, threshold: float, silent: Set[str] = NONE, muted: Container[str] = NONE) -> str:
    """stressed, silent (it stopped reporting), muted, normal or unknown (no prediction yet)."""
    if sample.device in muted:
        return "muted"
    if sample.device in silent:  # an open silence incident: see SILENT_AFTER
        return "silent"
    if sample.p_stressed is None:
        return "unknown"
    return "stressed" if sample.p_stressed >= threshold else "normal"


def state(sample: StoredSample, threshold: float, silent: Set[str] = NONE, muted: Container[str] = NONE) -> str:
    """The condition with its icon, e.g. '🔴 stressed'."""
    name = condition(sample, threshold, silent, muted)
    return f"{STATE_ICONS[name]} {name}"


OVERVIEW_ROWS = 25  # the worst machines shown by /status; the rest are counted


def overview(samples: list[StoredSample], threshold: float, now: float | None = None, silent: Set[str] = NONE,
             muted: Container[str] = NONE) -> str:
    """/status: the counts per condition, then the worst machines with last seen, latest P(stressed) and
    state, most urgent first (by condition, then P(stressed), then name); one message for any fleet."""
    if not samples:
        return "No machine has reported yet."
    now = time.time() if now is None else now
    rank = {name: index for index, name in enumerate(RISK_ORDER)}
    conditions = {s.device: condition(s, threshold, silent, muted) for s in samples}
    ranked = sorted(samples, key=lambda s: (
        rank[conditions[s.device]], -(s.p_stressed if s.p_stressed is not None else -1.0), s.device))

    def counts(part: list[StoredSample]) -> str:  # '3 stressed, 2 silent, 995 normal'; zeros left out
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


def device_status(
    sample: StoredSample, threshold: float, active_version: int | None, now: float | None = None,
    usual: Mapping[str, Usual] | None = None, forecasts: Mapping[str, Forecast | None] | None = None,
    horizon_s: float = 4 * 3600, silent: Set[str] = NONE, muted: Container[str] = NONE,
    tolerances: list[Tolerance] | None = None,
) -> str:
    """/status <device>: the latest sample as a table with each metric's usual range, its prediction, the
    model version, what it tolerates and where disk, memory and swap are heading."""
    now = time.time() if now is None else now
    usual = usual or {}
    names = [n for n in KNOWN_METRICS if n in sample.metrics] + sorted(set(sample.metrics) - set(KNOWN_METRICS))
    rows = []
    for name in names:
        if name == "disk_percent" and sample.filesystems:
            rows += _filesystem_rows(sample.metrics[name], sample.filesystems, usual)
        else:
            rows.append(_table_row(name, sample.metrics[name], usual))
    version = f"v{sample.model_version}" if sample.model_version else "none"
    tops = [f"{TOP_WORDS[kind]}: {escape(top_processes(top))}" for kind, top in (sample.processes or {}).items()
            if kind in TOP_WORDS and top]
    return (
        f"<b>{escape(sample.device)}</b>: {state(sample, threshold, silent, muted)}\n"
        f"Sample of {when(sample.ts)} ({ago(now - sample.ts)} ago)\n"
        f"P(stressed) {percent(sample.p_stressed)} by model {version}; active model "
        f"{'v' + str(active_version) if active_version else 'none'}\n"
        f"{pre(rows or ['(no metrics)'])}\n"
        + "".join(f"{line}\n" for line in tops)
        + tolerance_texts.tolerates(tolerances or [])
        + forecast_texts.forecast_summary(forecasts or {}, horizon_s)
    )


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


def _filesystem_rows(disk: float, filesystems: Mapping[str, float], usual: Mapping[str, Usual]) -> list[str]:
    """One row per filesystem, by mount point; the fullest (disk_percent) with the disk's usual range."""
    top = fullest(filesystems)
    return [_table_row("disk_percent", disk if mount == top else used, usual, disk_label(mount), mount == top)
            for mount, used in sorted(filesystems.items())]


CHART_FULLEST_DISK = "Disk (fullest)"  # the legend of a chart's disk line when the machine reports filesystems


def chart_disk(filesystems: Mapping[str, float] | None) -> str:
    """The legend of a chart's disk line: the fullest filesystem, when the machine reports them."""
    return CHART_FULLEST_DISK if filesystems else "Disk"


def chart_caption(device: str, start: float, end: float, fullest_now: str | None = None) -> str:
    """The caption of a chart: the machine, the window, which disk is drawn and what the shading means."""
    disk = "disk" if fullest_now is None else f"the fullest disk (now {escape(fullest_now)})"
    return (f"<b>{escape(device)}</b>, {_span(start, end)} ({ago(end - start)}): CPU, memory, swap and {disk} in %, "
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


def rejected(rows: list[Rejected]) -> str:
    """/rejected: the latest messages that broke the wire format, with their reasons."""
    if not rows:
        return "No message has been rejected."
    lines = [f"{when(r.received)}  {r.source}  {r.size} B\n  {r.reason}" for r in rows]
    return f"<b>Latest rejected messages</b> (newest first)\n{pre(lines)}"


# --- incidents -----------------------------------------------------------------------------------------------

def incident_keyboard(incident: Incident) -> InlineKeyboardMarkup | None:
    """The buttons of an incident's message: verdict, snooze and chart while it is open; the chart after, with
    Undo when its ❌ made the machine tolerate something."""
    def button(label: str, action: Action) -> InlineKeyboardButton:
        return InlineKeyboardButton(label, callback_data=callbacks.incident(incident.id, action))

    chart = button("📈 Chart", Action.CHART)
    if incident.state != State.OPEN:
        if incident.detail.tolerated and not incident.detail.undone_by:
            return InlineKeyboardMarkup([[button("↩️ Undo", Action.UNDO_TOLERANCE), chart]])
        return InlineKeyboardMarkup([[chart]]) if incident.kind != Kind.SILENT else None
    snooze = [button("🔕 1 h", Action.SNOOZE_1H), button("🔕 8 h", Action.SNOOZE_8H)]
    if incident.kind == Kind.FORECAST:
        verdict = [button("✅ Right forecast", Action.RIGHT_FORECAST),
                   button("❌ Wrong forecast", Action.WRONG_FORECAST)]
    elif incident.kind == Kind.STRESSED and incident.acked_by is None:
        verdict = [button("✅ Correct", Action.CORRECT), button("❌ Wrong prediction", Action.WRONG_PREDICTION)]
    else:
        verdict = []
    rows = [row for row in (verdict, [*snooze, chart] if incident.kind != Kind.SILENT else snooze) if row]
    return InlineKeyboardMarkup(rows)


def _span(start: float, end: float) -> str:
    """A span of clock times, to the second when it is shorter than minutes alone would tell (10 min)."""
    shown = "%H:%M:%S" if end - start < 600 else "%H:%M"
    return f"{datetime.fromtimestamp(start, UTC):{shown}}–{datetime.fromtimestamp(end, UTC):{shown}} UTC"


def incident(incident: Incident, usual: Mapping[str, Usual], now: float,
             tolerated: Mapping[str, float] | None = None) -> str:
    """An incident's message, from its newest state: opened, updated while it lasts, resolved; `tolerated` are its
    machine's tolerances now."""
    detail = incident.detail
    device = escape(incident.device)
    if incident.kind == Kind.SILENT:
        last_seen = ago(now - incident.opened_ts)
        if incident.state == State.OPEN:
            head = f"⚪ <b>{device}</b> stopped reporting at {when(incident.opened_ts)} (last seen {last_seen} ago)"
        else:
            head = (f"✅ <b>{device}</b> is reporting again after {lasted(incident.resolved_ts - incident.opened_ts)} "
                    f"of silence ({_span(incident.opened_ts, incident.resolved_ts)})")
        return clip(head + _footer(incident))
    if incident.kind == Kind.FORECAST:
        forecast = Forecast(incident.device, detail.metric, incident.sample_id or 0, detail.ts or 0.0,
                            detail.level or 0.0, detail.slope_per_h or 0.0, detail.eta_s)
        text = forecast_texts.forecast_alert(forecast, usual.get(detail.metric), tolerated)
        if incident.state != State.OPEN:
            text = f"{text}\n\n✅ No longer heading for its edge ({when(incident.resolved_ts)})."
        return clip(text + _footer(incident))
    # While it lasts: the driving metrics as they are now; once over: as they were at its worst.
    shown_values = detail.metrics if incident.state == State.OPEN else (detail.peak or detail.metrics)
    drivers = [name for name in detail.drivers if name in shown_values]
    shown = drivers or [name for name in FEATURES if name in shown_values][:3]
    worst = "" if incident.state == State.OPEN else " at its worst"
    filesystems, processes = ((detail.filesystems, detail.processes) if incident.state == State.OPEN
                              else (detail.peak_filesystems, detail.peak_processes))
    said = [_with_usual(name, shown_values[name], usual, incident.device, filesystems, processes, worst, tolerated)
            for name in shown]
    lines = [f"• {escape(line)}" for line in said]
    if incident.state == State.OPEN:
        head = [f"🔴 <b>{device}</b> is stressed: P(stressed) {percent(incident.last_p)}",
                f"Stressed since {when(incident.opened_ts)} ({ago(incident.last_ts - incident.opened_ts)}), "
                f"peak {percent(incident.peak_p)}"]
    elif incident.state == State.RESOLVED:
        head = [f"✅ <b>{device}</b> recovered after {lasted(incident.resolved_ts - incident.opened_ts)}",
                f"Was stressed {_span(incident.opened_ts, incident.resolved_ts)}, peak {percent(incident.peak_p)}"]
    else:
        head = [f"❌ <b>{device}</b>: a false alarm ({_span(incident.opened_ts, incident.resolved_ts)})",
                f"Peak P(stressed) {percent(incident.peak_p)}"]
    return clip("\n".join([*head, *lines]) + _footer(incident))


def _footer(incident: Incident) -> str:
    lines = []
    if incident.acked_by:
        what = "Labelled a false alarm" if incident.state == State.FALSE_ALARM else "Acknowledged"
        lines.append(f"{what} by {escape(incident.acked_by)} at {when(incident.acked_at)}")
    detail = incident.detail
    if detail.tolerated:
        lines.append(escape(tolerance_texts.tolerated_now(incident.device, detail.tolerated, incident.acked_by or "?")))
    if detail.undone_by:
        lines.append(tolerance_texts.undone_by(incident.device, detail.undone_by, detail.tolerated))
    if incident.snoozed_until and incident.state == State.OPEN:
        lines.append(f"🔕 Reminders snoozed until {when(incident.snoozed_until)}")
    return "\n\n" + "\n".join(lines) if lines else ""


def missed_keyboard(metric_id: int) -> InlineKeyboardMarkup:
    """Under /status <device>: a way to say the model missed a problem with this sample."""
    return InlineKeyboardMarkup([[InlineKeyboardButton("⚠️ Something is wrong here",
                                                       callback_data=callbacks.missed(metric_id))]])


def watching_fleet(topic: str, machines: int) -> str:
    return f"the fleet on Kafka topic <code>{escape(topic)}</code>: {plural(machines, 'machine')} so far"


def watching_this_machine(name: str) -> str:
    return f"this machine, <b>{escape(name)}</b> (single-host mode)"


def and_remote_write(watched: str, port: int) -> str:
    return f"{watched}, and the machines Prometheus remote-writes to my port {port} (<code>/api/v1/write</code>)"


def greeting(watched: str, chat_id: int, chat_ids: list[int]) -> str:
    """/start: what this bot watches, where alerts go, and what it can do."""
    others = len([c for c in chat_ids if c != chat_id])
    where = "this chat" + (f" and {plural(others, 'other chat')}" if others else "")
    return f"👋 I watch {watched}. Alerts go to {where}.\n\n{HELP}"


# --- replies to incidents, buttons and news ------------------------------------------------------------------

def reply(kind: Reply, incident: Incident, now: float) -> str:
    """A short reply to an incident's message: the machine reports again, recovered, or a reminder."""
    if kind == Reply.REPORTING_AGAIN:
        gap = lasted(incident.resolved_ts - incident.last_ts)
        return f"✅ {incident.device} is reporting again after {gap} of silence"
    if kind == Reply.RECOVERED:
        return f"✅ {incident.device} recovered after {lasted(incident.resolved_ts - incident.opened_ts)}"
    what = {Kind.SILENT: "still silent", Kind.FORECAST: "still heading for its edge"}.get(incident.kind,
                                                                                         "still stressed")
    return (f"⏰ {incident.device} is {what} (since {ago(now - incident.created)} ago). ✅ acknowledges it; "
            "🔕 snoozes it.")


def pressed(action: Action, device: str, tolerated: Mapping[str, float] | None = None, metric: str = "") -> str:
    """What the person who pressed a button on an incident is told (`tolerated`: what a ❌ made the machine
    tolerate; `metric`: a forecast's)."""
    if action in SNOOZE_HOURS:
        return f"Reminders about {device} snoozed for {SNOOZE_HOURS[action]} h."
    if action == Action.WRONG_FORECAST:
        return tolerance_texts.forecast_held(device, forecast_texts.forecast_word(metric) if metric else "it")
    if action == Action.RIGHT_FORECAST:
        return f"Thanks: stored as a {action.value} forecast."
    if action == Action.CORRECT:
        return "Thanks: labelled stressed. No more reminders about it."
    if tolerated:
        return f"Thanks: {tolerance_texts.tolerated_now(device, tolerated)}. Undo on the alert takes it back."
    return "Thanks: labelled normal, and the alert is closed as a false alarm."


def missed_labelled(sample: StoredSample) -> str:
    return (f"Thanks: {sample.device} at {when(sample.ts)} is labelled stressed; the next /retrain learns "
            "from it.")


DATABASE_DOWN = "⚠️ The database is unreachable: metrics are not stored and /status cannot answer until it is back."
DATABASE_UP = "✅ The database is reachable again: metrics are stored."
KAFKA_DOWN = ("⚠️ Kafka is unreachable: no new metrics arrive until it is back. Nothing is lost: they are read "
              "when it returns.")
KAFKA_UP = "✅ Kafka is reachable again: metrics arrive."
REMOTE_WRITE_IDLE = ("⚠️ No remote write has arrived for a minute: is Prometheus down? The machines it reports "
                     "are not declared silent meanwhile.")
REMOTE_WRITE_BACK = "✅ Remote writes arrive again."

# --- replies to commands -------------------------------------------------------------------------------------

STATUS_USAGE = "Usage: /status, /status <device> or /status <pattern>, e.g. /status web*"
UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."
NOT_ALLOWED_BUTTON = "This chat is not allowed to use this bot."
INVALID_BUTTON = "This button is not valid."
WENT_WRONG = "Sorry, something went wrong; it has been logged."
WENT_WRONG_BUTTON = "Sorry, something went wrong; it has been logged. Try again."
CANCELLED = "Cancelled."
CANCELLED_NOTHING_CHANGED = "Cancelled: nothing changed."


def chart_usage(max_hours: int) -> str:
    return f"Usage: /chart <device> [hours], hours from 1 to {max_hours}, e.g. /chart pc1 6"


def admins_only(command: str) -> str:
    """The answer to a button only admins may press."""
    return f"Only admins can use {command}."
