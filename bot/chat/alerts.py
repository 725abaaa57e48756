"""The incident message and its buttons: an alert as it stands (opened, updated while it lasts, recovered), its
keyboard, the replies to it (recovered, reporting again, a reminder), one message for many machines (a group), and
what a press on a button does and says."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.ext import BaseHandler, CallbackQueryHandler, ContextTypes

from bot import db
from bot.chat import callbacks, common, forecasts, history, status, tolerance
from bot.chat.formatting import (
    ago,
    clip,
    condition_of,
    described,
    disk_label,
    escape,
    fullest,
    lasted,
    metric_value,
    percent,
    plural,
    severity_icon,
    span,
    top_processes,
    usual_range,
    when,
)
from bot.chat.sender import Render
from bot.db import Incident, Notice, incidents, outbox
from bot.pipeline import tolerating
from bot.pipeline.baselines import Baselines, Usual
from bot.pipeline.escalation import Callee
from bot.pipeline.forecast import Forecast
from bot.pipeline.tolerating import Tolerances
from ml.features import FEATURES
from schema.conditions import Event, Predicted, Severity, parse_key
from schema.domain import ACTIONS_OF, FILESYSTEM, SNOOZE_HOURS, Action, Kind, Reply, State

log = logging.getLogger(__name__)


# The top processes an alert shows beside a metric that drives it: CPU for what busy CPUs cause, memory for
# memory and swap.
TOP_OF = {"cpu_percent": "cpu", "load_1m": "cpu", "cpu_temp_c": "cpu", "mem_percent": "memory",
          "swap_percent": "memory"}


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
    if name == "disk_percent" and (mount := fullest(filesystems)) and FILESYSTEM + mount in usual:
        usual = {name: usual[FILESYSTEM + mount]}  # the fullest filesystem's own range
    own = FILESYSTEM + mount if name == "disk_percent" and (mount := fullest(filesystems)) else name
    tolerance_of = own if tolerated and own in tolerated else name
    if tolerated and tolerance_of in tolerated:
        shown = f"{shown} {tolerance.tolerated_up_to(tolerance_of, value, tolerated[tolerance_of], device)}{when_shown}"
    elif name not in usual:
        shown = f"{shown} (no usual range yet){when_shown}"
    else:
        shown = f"{shown} (usually {usual_range(name, usual[name])} on {device}){when_shown}"
    kind = TOP_OF.get(name)
    if kind and (top := top_processes((processes or {}).get(kind))):
        shown += f" · top{' memory' if name == 'swap_percent' else ''}: {top}"
    return shown


def keyboard(incident: Incident) -> InlineKeyboardMarkup | None:
    """The buttons of an incident's message: verdict, snooze and chart while it is open; the chart after, with
    Undo when its ❌ made the machine tolerate something."""
    def button(label: str, action: Action) -> InlineKeyboardButton:
        return InlineKeyboardButton(label, callback_data=callbacks.incident(incident.id, action))

    chart = button("📈 Chart", Action.CHART)
    detail = incident.detail
    if incident.state != State.OPEN:
        report = button("📄 Report", Action.REPORT)  # its post-mortem: bot/chat/history.py
        if (detail.tolerated or detail.expected_by) and not detail.undone_by:
            return InlineKeyboardMarkup([[button("↩️ Undo", Action.UNDO_TOLERANCE), chart, report]])
        return InlineKeyboardMarkup([[chart, report] if incident.kind != Kind.SILENT else [report]])
    snooze = [button("🔕 1 h", Action.SNOOZE_1H), button("🔕 8 h", Action.SNOOZE_8H)]
    if incident.kind == Kind.FORECAST:
        verdict = [button("✅ Right forecast", Action.RIGHT_FORECAST),
                   button("❌ Wrong forecast", Action.WRONG_FORECAST)]
    elif incident.kind == Kind.STRESSED and incident.acked_by is None:
        verdict = [button("✅ Correct", Action.CORRECT), button("❌ Wrong prediction", Action.WRONG_PREDICTION)]
    elif incident.kind == Kind.CONDITION and incident.acked_by is None:
        disk = _is_disk(incident)
        verdict = [button("✅ Replaced" if disk else "✅ Correct", Action.CORRECT),
                   button("❌ Wrong" if disk else "❌ Expected here", Action.EXPECTED)]
    else:
        verdict = []
    taking = [] if detail.taken_by or incident.acked_by else [button("👀 On it", Action.ON_IT)]
    middle = taking if incident.kind == Kind.SILENT else [*taking, chart]
    rows = [row for row in (verdict, middle, snooze) if row]
    return InlineKeyboardMarkup(rows)


def alert(incident: Incident, usual: Mapping[str, Usual], now: float,
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
                    f"of silence ({span(incident.opened_ts, incident.resolved_ts)})")
        if detail.released:
            head += (f"\nStill silent after {escape(detail.parent)}, which it stands behind, came back: "
                     "a problem of its own.")
        return clip(head + _behind(incident) + _footer(incident))
    if incident.kind == Kind.CONDITION:
        return clip(condition_alert(incident) + _footer(incident))
    if incident.kind == Kind.FORECAST:
        forecast = Forecast(incident.device, detail.metric, incident.sample_id or 0, detail.ts or 0.0,
                            detail.level or 0.0, detail.slope_per_h or 0.0, detail.eta_s)
        text = forecasts.forecast_alert(forecast, usual.get(detail.metric), tolerated)
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
                f"Was stressed {span(incident.opened_ts, incident.resolved_ts)}, peak {percent(incident.peak_p)}"]
    else:
        head = [f"❌ <b>{device}</b>: a false alarm ({span(incident.opened_ts, incident.resolved_ts)})",
                f"Peak P(stressed) {percent(incident.peak_p)}"]
    return clip("\n".join([*head, *lines]) + _behind(incident) + _footer(incident))


SHOWN_BEHIND = 10  # machines behind a parent named in its alert


def _behind(incident: Incident) -> str:
    """A parent's line: the machines behind it that went silent during its incident."""
    behind = incident.detail.behind
    if not behind:
        return ""
    names = ", ".join(escape(d) for d in behind[:SHOWN_BEHIND]) + (
        f" and {len(behind) - SHOWN_BEHIND} more" if len(behind) > SHOWN_BEHIND else "")
    verb = "are" if len(behind) > 1 else "is"
    if incident.state == State.OPEN:
        return f"\n{plural(len(behind), 'machine')} behind it {verb} silent too: {names}"
    return f"\n{plural(len(behind), 'machine')} behind it went silent with it: {names}"


def _is_disk(incident: Incident) -> bool:
    """A disk the disk model judged: answered ✅ replaced or ❌ wrong, it never recovers by itself."""
    found = condition_of(incident)
    return found is not None and isinstance(found[0].rule, Predicted)


def condition_alert(incident: Incident) -> str:
    """A condition's message: the machine, the evidence, since when and what to do; once over, how long it lasted."""
    detail, device = incident.detail, escape(incident.device)
    found = condition_of(incident)
    todo = f"\nWhat to do: {escape(found[0].todo)}" if found else ""
    evidence = escape(detail.evidence)
    if found is not None and isinstance(found[0].rule, Event):
        return f"{severity_icon(Severity.INFO)} <b>{device}</b> {evidence} ({when(incident.opened_ts)}){todo}"
    if _is_disk(incident) and incident.state != State.OPEN:
        answered = incident.state == State.RESOLVED and incident.acked_by
        how = (f"marked replaced by {escape(incident.acked_by)}" if answered
               else "said to be fine" if incident.state == State.FALSE_ALARM else "no longer on the machine")
        return (f"✅ <b>{device}</b>: {escape(described(incident))} {how} after "
                f"{lasted((incident.resolved_ts or incident.last_ts) - incident.opened_ts)}\nWas: {evidence}")
    if incident.state == State.OPEN:
        critical = " · critical" if detail.severity == Severity.CRITICAL else ""
        icon = "💽" if _is_disk(incident) else severity_icon(detail.severity)
        return (f"{icon} <b>{device}</b>: {evidence}\n"
                f"Since {when(incident.opened_ts)} ({ago(incident.last_ts - incident.opened_ts)}){critical}{todo}")
    if incident.state == State.RESOLVED:
        return (f"✅ <b>{device}</b>: {escape(described(incident))} cleared after "
                f"{lasted(incident.resolved_ts - incident.opened_ts)} "
                f"({span(incident.opened_ts, incident.resolved_ts)})\nWas: {evidence}")
    return f"❌ <b>{device}</b>: {escape(described(incident))}, expected here\nWas: {evidence}"


def _footer(incident: Incident) -> str:
    lines = []
    detail = incident.detail
    if incident.acked_by and not detail.expected_by:  # the line of an expected condition says who and when
        verdict = "Labelled a false alarm" if incident.state == State.FALSE_ALARM else "Acknowledged"
        lines.append(f"{verdict} by {escape(incident.acked_by)} at {when(incident.acked_at)}")
    if detail.tolerated:
        lines.append(escape(tolerance.tolerated_now(incident.device, detail.tolerated, incident.acked_by or "?")))
    if detail.tolerated and (beyond := tolerating.untolerable(detail)):
        lines.append(escape(tolerance.not_tolerated(beyond)))
    if detail.expected_by:
        lines.append(escape(tolerance.expected_now(incident.device, described(incident), detail.expected_by)))
    if detail.undone_by:
        lines.append(tolerance.undone_by(incident.device, detail.undone_by, detail.tolerated)
                     if detail.tolerated else tolerance.expected_undone_by(incident.device, described(incident),
                                                                           detail.undone_by))
    if incident.snoozed_until and incident.state == State.OPEN:
        lines.append(f"🔕 Reminders snoozed until {when(incident.snoozed_until)}")
    if detail.taken_by:
        lines.append(f"👀 {escape(detail.taken_by)} is on it (since {when(detail.taken_at or 0)})")
    lines += [f"⏫ escalated to {escape(to)} at {when(at)}" for at, to in detail.escalated]
    return "\n\n" + "\n".join(lines) if lines else ""


def reply(kind: Reply, incident: Incident, now: float) -> str:
    """A short reply to an incident's message: the machine reports again, recovered, or a reminder."""
    if kind == Reply.REPORTING_AGAIN:
        gap = lasted(incident.resolved_ts - incident.last_ts)
        return f"✅ {incident.device} is reporting again after {gap} of silence{_behind_back(incident)}"
    if kind == Reply.RECOVERED and incident.kind == Kind.CONDITION:
        return (f"✅ {incident.device}: {described(incident)} cleared after "
                f"{lasted(incident.resolved_ts - incident.opened_ts)}")
    if kind == Reply.RECOVERED:
        return (f"✅ {incident.device} recovered after {lasted(incident.resolved_ts - incident.opened_ts)}"
                f"{_behind_back(incident)}")
    still = {Kind.SILENT: "is still silent", Kind.FORECAST: "is still heading for its edge",
             Kind.CONDITION: f"still has it: {incident.detail.evidence}"}.get(incident.kind, "is still stressed")
    return (f"⏰ {incident.device} {still} (since {ago(now - incident.created)} ago). ✅ acknowledges it; "
            "🔕 snoozes it.")


def _behind_back(incident: Incident) -> str:
    """The end of a parent's recovery: how many of the machines behind it report again; the others get their own
    silence time before each alerts on its own."""
    behind, still = incident.detail.behind, incident.detail.still_silent
    if not behind:
        return ""
    if not still:
        return f" · {'the ' + plural(len(behind), 'machine') if len(behind) > 1 else 'the machine'} behind it too"
    names = ", ".join(still[:SHOWN_BEHIND]) + (f" and {len(still) - SHOWN_BEHIND} more"
                                                if len(still) > SHOWN_BEHIND else "")
    return (f" · {len(behind) - len(still)} of the {plural(len(behind), 'machine')} behind it too; still silent: "
            f"{names} (each alerts on its own if it stays silent)")


def call(waiting: list[Incident], callee: Callee | None, waited_s: float, note: str) -> str:
    """An escalation step's reply: it mentions who is called (a mention notifies even in a muted group), and names
    every incident of the chat that reached that step together."""
    who = (f'<a href="tg://user?id={callee.user}">{escape(callee.name)}</a>' if callee
           else "Nobody is on call now (/oncall)")
    what = (f"{escape(waiting[0].device)}'s alert" if len(waiting) == 1
            else f"{plural(len(waiting), 'alert')}")
    lines = [f"⏫ {who}: nobody answered {what} for {ago(waited_s)}."]
    if note:
        lines.append(f"({escape(note)}.)")
    first = min(i.opened_ts for i in waiting)
    lines += [_member_line(i, i.kind, first) for i in waiting[:SHOWN_NAMES]]
    if len(waiting) > SHOWN_NAMES:
        lines.append(f"… and {len(waiting) - SHOWN_NAMES} more")
    lines.append("👀 On it on an alert takes it: no more reminders or escalation.")
    return clip("\n".join(lines))


def pressed(action: Action, device: str, tolerated: Mapping[str, float] | None = None, metric: str = "") -> str:
    """What the person who pressed a button on an incident is told (`tolerated`: what a ❌ made the machine
    tolerate; `metric`: a forecast's or a condition's)."""
    found = parse_key(metric)
    if found is not None and isinstance(found[0].rule, Predicted) and action in (Action.CORRECT, Action.EXPECTED):
        if action == Action.CORRECT:
            return f"Thanks: the disk {found[1]} of {device} is marked replaced; /retrain disk learns from it."
        return (f"Thanks: the disk {found[1]} of {device} is labelled fine; it alerts no more unless Undo. "
                "/retrain disk learns from it.")
    if found is not None and action in (Action.CORRECT, Action.EXPECTED):
        condition, obj = found
        if action == Action.CORRECT:
            return "Thanks: acknowledged. No more reminders about it."
        where = f" on {obj}" if obj else ""
        return (f"Thanks: {condition.title}{where} is expected on {device} now: it alerts no more there. Undo on the "
                "alert takes it back.")
    if action == Action.ON_IT:
        return f"Thanks: you are on {device}. No more reminders or escalation; ✅/❌ still label it."
    if action in SNOOZE_HOURS:
        return f"Reminders about {device} snoozed for {SNOOZE_HOURS[action]} h."
    if action == Action.WRONG_FORECAST:
        return tolerance.forecast_held(device, forecasts.forecast_word(metric) if metric else "it")
    if action == Action.RIGHT_FORECAST:
        return f"Thanks: stored as a {action.value} forecast."
    if action == Action.CORRECT:
        return "Thanks: labelled stressed. No more reminders about it."
    if tolerated:
        return f"Thanks: {tolerance.tolerated_now(device, tolerated)}. Undo on the alert takes it back."
    return "Thanks: labelled normal, and the alert is closed as a false alarm."


SHOWN_NAMES = 20  # a group message names this many machines, then "and N more" and a button for all
MESSAGE_BUDGET = 3800  # characters of one message listing a group's members
MAX_BUTTONS = 60  # a group message has a button per machine, up to this many (Telegram allows 100)
BUTTONS_PER_ROW = 3
_HEADS = {
    Kind.STRESSED: "🔴 {} stressed", Kind.SILENT: "⚪ {} stopped reporting", Kind.FORECAST: "📈 {} heading for full",
    Kind.CONDITION: "🛠 Problems: {}",
    Reply.RECOVERED: "✅ {} recovered", Reply.REPORTING_AGAIN: "✅ {} reporting again",
    Reply.REMINDER: "⏰ {} still need attention (nobody acknowledged)",
}


def _member_line(incident: Incident, change: str, first: float) -> str:
    """One member: a stressed machine with its P(stressed) and main driver, a silent one with when it was last
    seen (when later than the group's first), and how it ended if it did."""
    device = f"<b>{escape(incident.device)}</b>"
    if change == Kind.STRESSED:
        driver = incident.detail.drivers[0] if incident.detail.drivers else None
        shown = incident.detail.metrics if incident.state == State.OPEN else incident.detail.peak
        what = f" · {escape(metric_value(driver, shown[driver]))}" if driver and driver in shown else ""
        line = f"• {device}: P {percent(incident.peak_p)}{what}"
    elif change == Kind.SILENT and incident.opened_ts > first + 60:
        line = f"• {device}: last seen {when(incident.opened_ts)}"
    elif change == Kind.FORECAST:
        line = f"• {device}: {escape(incident.detail.metric)}"
    elif change == Kind.CONDITION:
        line = f"• {device}: {escape(incident.detail.evidence)}"
    elif incident.kind == Kind.CONDITION:  # a recovery, a reminder
        line = f"• {device}: {escape(described(incident))}"
    else:
        line = f"• {device}"
    if incident.detail.behind:
        line += f" · {len(incident.detail.behind)} behind it silent too"
    if incident.state == State.RESOLVED and change in (Kind.STRESSED, Kind.SILENT, Kind.FORECAST, Kind.CONDITION):
        line += " ✅ " + {Kind.SILENT: "reporting again", Kind.CONDITION: "cleared"}.get(change, "recovered")
    elif incident.state == State.FALSE_ALARM:
        line += " ❌ false alarm"
    return line


def group_message(change: str, members: list[tuple[Notice, Incident]]) -> tuple[str, InlineKeyboardMarkup | None]:
    """A group's message: how many, the first names (and how many more), and for stressed machines each one's
    P(stressed) and main driver; a button per machine sends its own alert, with its buttons."""
    incidents = [incident for _, incident in members]
    machines = len({incident.device for incident in incidents})
    counted = plural(machines, "machine")
    if machines < len(incidents):  # conditions: several objects of one machine ("3 problems on 1 machine")
        counted = f"{len(incidents)} on {counted}"
    head = f"<b>{_HEADS.get(change, '{} ' + change).format(counted)}</b>"
    first = min((i.opened_ts for i in incidents), default=0.0)
    if change in tuple(Kind):  # an outage: since when; a recovery or a reminder: when
        head += f" (since {when(first)})"
    else:
        head += f" ({when(max((i.resolved_ts or i.updated for i in incidents), default=0.0))})"
    lines = [_member_line(i, change, first) for i in incidents[:SHOWN_NAMES]]
    if len(incidents) > SHOWN_NAMES:
        lines.append(f"… and {len(incidents) - SHOWN_NAMES} more")
    text = f"{head}\n" + "\n".join(lines)
    buttons = [InlineKeyboardButton(f"{i.device} ›", callback_data=callbacks.expand(i.id)) for i in incidents
               if change in (Kind.STRESSED, Kind.FORECAST, Kind.CONDITION) and i.state == State.OPEN][:MAX_BUTTONS]
    if buttons:
        text += "\n\nA machine's button sends its own alert, with ✅/❌ and 🔕."
    rows = [buttons[i:i + BUTTONS_PER_ROW] for i in range(0, len(buttons), BUTTONS_PER_ROW)]
    if len(incidents) > SHOWN_NAMES and members[0][0].group_id is not None:  # each member can be reached
        rows.append([InlineKeyboardButton(f"All {len(incidents):,} ›",
                                          callback_data=callbacks.group(members[0][0].group_id))])
    return clip(text), InlineKeyboardMarkup(rows) if rows else None


def every_member(change: str, members: list[tuple[Notice, Incident]]) -> list[str]:
    """Every member of a group, a line each, in messages Telegram takes (the button "All N" sends them)."""
    first = min((incident.opened_ts for _, incident in members), default=0.0)
    lines = [_member_line(incident, change, first) for _, incident in members]
    texts, part = [], ""
    for line in lines:
        if len(part) + len(line) + 1 > MESSAGE_BUDGET:
            texts.append(part)
            part = ""
        part += line + "\n"
    return [*texts, part] if part else texts


def expanded(device: str, already: bool) -> str:
    """The answer to a machine's button on a group message."""
    return f"{device}'s alert is already in this chat." if already else f"Sending {device}'s own alert…"


def renderer(baselines: Baselines, tolerances: Tolerances | None = None) -> Render:
    """An incident's message as of its newest state, with its machine's tolerances (blocks: the usual ranges may
    be read)."""

    def render(incident: Incident) -> tuple[str, InlineKeyboardMarkup | None]:
        tolerated = tolerances.of(incident.device) if tolerances is not None else None
        return (alert(incident, baselines.get(incident.device), time.time(), tolerated),
                keyboard(incident))

    return render


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
        await query.answer(common.INVALID_BUTTON)
        return
    if parsed[1] == Action.CHART:
        await query.answer()
        await status.send_chart(update, context, incident.device, incident.opened_ts - status.CHART_MARGIN_S,
                                (incident.resolved_ts or time.time()) + status.CHART_MARGIN_S)
        return
    if parsed[1] == Action.UNDO_TOLERANCE:
        await tolerance.undo(update, context, incident.id, incident.device)
        return
    if parsed[1] == Action.REPORT:
        await history.report_button(update, context, incident)
        return
    user_id, name = common.who(update)
    now = await asyncio.to_thread(incidents.press, incident.id, parsed[1], user_id, name, time.time(),
                                  tolerating.wanted)
    await asyncio.to_thread(common.tolerances_of(context).refresh)  # this process's next batch has it anyway
    await query.answer(pressed(parsed[1], incident.device, now.detail.tolerated, now.detail.metric))
    context.application.create_task(common.sender_of(context).run(context.bot), name="send")  # every copy shows it


async def expand_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A machine's button on a group message: its own alert, with its buttons, in this chat."""
    query = update.callback_query
    incident_id = callbacks.parse_expand(query.data)
    chat = update.effective_chat
    notice = None
    if incident_id is not None and chat is not None:
        notice = await asyncio.to_thread(outbox.expand, incident_id, chat.id, common.thread_of(update))
    if notice is None:
        log.warning("ignored callback %r from user %d", query.data[:80], query.from_user.id)
        await query.answer(common.INVALID_BUTTON)
        return
    device = await asyncio.to_thread(lambda: notice.incident.device)
    await query.answer(expanded(device, notice.sent is not None or notice.expanded))
    context.application.create_task(common.sender_of(context).run(context.bot), name="send")


async def group_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """"All N" on a group message: every member, as replies to it."""
    query = update.callback_query
    group_id = callbacks.parse_group(query.data)
    chat = update.effective_chat
    group = await asyncio.to_thread(outbox.group_in, group_id, chat.id) if group_id and chat else None
    if group is None:
        log.warning("ignored callback %r from user %d", query.data[:80], query.from_user.id)
        await query.answer(common.INVALID_BUTTON)
        return
    members = await asyncio.to_thread(outbox.members, group.id)
    await query.answer(f"Sending all {len(members):,}…")
    for text in every_member(group.change, members):
        await query.message.reply_text(text, parse_mode=ParseMode.HTML, do_quote=True)


def handlers() -> list[BaseHandler]:
    return [CallbackQueryHandler(incident_button, pattern=callbacks.INCIDENT_PATTERN),
            CallbackQueryHandler(expand_button, pattern=callbacks.EXPAND_PATTERN),
            CallbackQueryHandler(group_button, pattern=callbacks.GROUP_PATTERN)]
