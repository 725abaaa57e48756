"""/start and /help: what the bot watches, where its alerts go, what it can do; and the command menu."""

from __future__ import annotations

import asyncio

from telegram import BotCommand, Update
from telegram.constants import ParseMode
from telegram.ext import BaseHandler, CommandHandler, ContextTypes

from bot import db
from bot.chat import common
from bot.chat.formatting import escape, plural

HELP = """<b>Rigwatch</b> watches your machines and warns here when one is likely to need a technical \
intervention (it is <i>stressed</i>), when its disk, memory or swap is heading for full, when it stops \
reporting, and when something is broken rather than full (🛠: a degraded RAID array, a failed service, a \
filesystem out of inodes or read-only, processes killed for memory, a clock out of sync…).

/status: every machine, the riskiest first
/status &lt;device&gt;: one machine: its latest sample, usual ranges, forecast and a chart of its last 2 hours
/chart &lt;device&gt; [hours]: a chart of one machine over the last hours (1 to 720; 2 by default)
/status &lt;pattern&gt;: the machines whose names match, e.g. /status web*
/disks: the fleet's disks most likely to fail within 30 days, from their SMART counters
/history &lt;pattern&gt; [period]: the incidents of these machines, newest first, with who answered (default 7 d, \
at most 90 d), e.g. /history web* 24h
/report &lt;number&gt;: one incident's post-mortem as a Markdown document, and its chart
/mute &lt;pattern&gt; [duration] [reason]: no alerts for machines under maintenance (default 1 h), e.g. \
/mute web* 2h deploy
/mute &lt;pattern&gt; &lt;days&gt; &lt;hh:mm-hh:mm&gt; [reason]: a recurring window, e.g. /mute db1 daily 02:00-03:00 \
backups or /mute db* sun 01:00-05:00
/unmute &lt;pattern&gt;, /muted: end a mute; list the mutes and windows
/subscribe &lt;pattern&gt;…: this chat (or forum topic) gets only the messages about these machines
/unsubscribe [pattern…], /subscriptions: remove some or all; list them
/oncall: who is on call now and next; /oncall @alice mon-fri 09:00-18:00 and /oncall @bob other set it (admins)
/escalate 10m oncall, 20m dm oncall, 40m @carol, 60m &lt;chat id&gt;: what happens when nobody answers an alert \
here (admins; /escalate shows it)
/depends &lt;pattern&gt; on &lt;device&gt;: machines behind a switch or a hypervisor, whose outage is then one \
message (admins; /depends lists them)
/tolerance &lt;device&gt;: what a ❌ taught that machine (metrics it tolerates higher than the fleet)
/tolerance &lt;device&gt; reset [metric]: forget them (admins, or whoever set it), e.g. /tolerance build1 reset disk
/digest daily 09:00 or /digest weekly mon 09:00: a summary of incidents, answers, what is open and what is \
heading for full, here or in this topic (admins; /digest off stops it, /digest alone shows it)
/rejected: the latest messages that broke the wire format, and why
/versions [version]: the model versions, newest first; one in full with its calibration
/retrain: train a new model from the data and your labels (admins)
/rollback [version]: go back to the previous or a given model version (admins)
/versions disk, /retrain disk, /rollback disk: the same for the disk model
/help: this message

An alert is one message, edited while the incident lasts and marked when it recovers. When several machines \
change together (an outage, a storm) they share one message, with a button per machine for its own alert. Its buttons: \
<b>👀 On it</b> says you took it (no more reminders or escalation); \
<b>✅ Correct</b> acknowledges it (no more reminders) and stores a label; <b>❌ Wrong prediction</b> stores \
the sample as normal, closes the alert and, at once, makes that machine tolerate the values that drove it (up \
to each metric's hard ceiling; <b>↩️ Undo</b> takes it back); <b>🔕</b> snoozes its reminders. The next model \
learns from your labels. A forecast has its own buttons: <b>❌ Wrong forecast</b> stops that forecast on that \
machine until the metric is back in its usual range. On a 🛠 problem, <b>❌ Expected here</b> stops that \
problem alerting on that machine until <b>↩️ Undo</b>."""
COMMANDS = [  # the command menu
    BotCommand("status", "every machine, or /status <device> for one"),
    BotCommand("disks", "the disks most likely to fail"),
    BotCommand("chart", "a chart of one machine: /chart <device> [hours]"),
    BotCommand("history", "the incidents of some machines: /history web* 7d"),
    BotCommand("report", "one incident's post-mortem: /report <number>"),
    BotCommand("mute", "no alerts for machines under maintenance: /mute <pattern> 2h"),
    BotCommand("muted", "the mutes and maintenance windows"),
    BotCommand("subscribe", "this chat or topic gets only these machines: /subscribe web*"),
    BotCommand("subscriptions", "what this chat is subscribed to"),
    BotCommand("oncall", "who is on call now and next"),
    BotCommand("escalate", "what happens when nobody answers an alert here"),
    BotCommand("depends", "machines behind a switch or a hypervisor"),
    BotCommand("tolerance", "what a ❌ taught a machine: /tolerance <device> [reset [metric]]"),
    BotCommand("digest", "a daily or weekly summary here: /digest daily 09:00"),
    BotCommand("rejected", "latest invalid messages and why"),
    BotCommand("versions", "model versions, or /versions <n> for one in full"),
    BotCommand("retrain", "train a new model from data and labels (admins)"),
    BotCommand("rollback", "go back to an earlier model version (admins)"),
    BotCommand("help", "what this bot does"),
]


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


async def start_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start: what this bot watches and where its alerts go, then the help."""
    settings = common.settings_of(context)
    poller = context.bot_data.get("poller")
    machines = await asyncio.to_thread(db.device_count)
    if settings.kafka_bootstrap:
        watched = watching_fleet(settings.kafka_topic, machines)
    else:
        watched = watching_this_machine(getattr(poller.source, "device", "") if poller else "")
    if settings.remote_write_listen is not None:
        watched = and_remote_write(watched, settings.remote_write_listen[1])
    text = greeting(watched, update.effective_chat.id, sorted(settings.allowed_chat_ids))
    await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/help: what the bot does and its commands."""
    await update.effective_message.reply_text(HELP, parse_mode=ParseMode.HTML)


def handlers() -> list[BaseHandler]:
    return [CommandHandler("start", start_command), CommandHandler("help", help_command)]
