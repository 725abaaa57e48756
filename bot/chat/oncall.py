"""On call: who answers (/oncall), what happens when nobody does (/escalate), and which machines stand behind which
(/depends), with their words. Showing them is for every allowed chat; changing them is for admins, since an
escalation wakes people up."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, tzinfo

from telegram import Update, User
from telegram.constants import ParseMode
from telegram.ext import BaseHandler, CommandHandler, ContextTypes

from agent.vocabulary import DEVICE_RE
from bot import db
from bot.chat import common
from bot.chat.formatting import ago, clip, escape, plural
from bot.db import oncall
from schema.domain import PATTERN_RE, Window
from schema.oncall import Dependency, Shift, Step, StepKind, next_change, on_call, parse_steps

log = logging.getLogger(__name__)

ONCALL_USAGE = ("Usage: /oncall shows who is on call now and next; /oncall @alice mon-fri 09:00-18:00 puts "
                "someone on call in a window (days: daily, weekdays, weekends, mon … sun, mon,wed or mon-fri); "
                "/oncall @bob other covers every other time; /oncall @alice off, /oncall off take people off. "
                "Instead of @name you can reply to one of their messages.")
ESCALATE_USAGE = ("Usage: /escalate 10m oncall, 20m dm oncall, 40m @carol, 60m -100123 (steps of 1 minute to 24 hours, "
                  "each later than the one before: oncall or @name mentions them here, dm oncall or dm @name sends "
                  "them the alert directly, a chat id (-100123, -100123/7 for its topic 7) or topic 7 sends it "
                  "there); /escalate shows this topic's; /escalate off removes it.")
DEPENDS_USAGE = ("Usage: /depends <pattern> on <device>, e.g. /depends rack1-* on sw-rack1: while sw-rack1 is silent "
                 "or stressed, a machine matching rack1-* that goes silent sends nothing of its own. /depends lists "
                 "them; /depends <pattern> off removes one.")


def local(ts: float, tz: tzinfo) -> str:
    """A time in the bot's time zone, as a roster reads it: "Mon 18:00"."""
    return datetime.fromtimestamp(ts, tz).strftime("%a %H:%M")


def unknown_person(who: str) -> str:
    return (f"I don't know {escape(who)} in this chat yet: I learn people when they send a command or press a button "
            f"here (a bot does not see other messages). Ask {escape(who)} to send /start here, or reply to one of "
            "their messages with the command.")


def dm_impossible(names: list[str]) -> str:
    """The warning for people a direct message cannot reach."""
    return "".join(f"\n⚠️ {escape(name)} has not started me in a private chat: a direct message cannot reach them, "
                   "so a dm step mentions them here instead. They can open a private chat with me and press Start."
                   for name in names)


def roster(shifts: list[Shift], now: float, tz: tzinfo, unreachable: set[int]) -> str:
    """/oncall: who is on call now and who next, the shifts, and who a direct message cannot reach."""
    if not shifts:
        return ("Nobody is on call in this chat. /oncall @alice mon-fri 09:00-18:00 puts someone on call; "
                "/oncall @bob other covers the rest of the time.")
    current = on_call(shifts, now, tz)
    change = next_change(shifts, now, tz)
    lines = [f"👤 On call now: <b>{escape(current.name)}</b> ({escape(current.describe())})" if current
             else "👤 Nobody is on call right now."]
    if change is not None:
        then, who = change
        lines[0] += f" until {local(then, tz)}"
        lines.append(f"Next: <b>{escape(who.name)}</b> ({escape(who.describe())}) from {local(then, tz)}" if who
                     else f"Next: nobody, from {local(then, tz)}")
    lines.append(f"\n<b>Shifts</b> ({tz}; the first whose window holds is on call)")
    lines += [f"• {escape(s.name)} {escape(s.describe())}" for s in shifts]
    names = list(dict.fromkeys(s.name for s in shifts if s.user in unreachable))
    return clip("\n".join(lines) + dm_impossible(names))


def put_on_call(shift: Shift, tz: tzinfo, unreachable: bool) -> str:
    when = f"{shift.window.describe()} ({tz})" if shift.window else "whenever nobody else's window holds"
    return (f"👤 {escape(shift.name)} is on call {escape(when)}. /oncall shows who is on call now."
            + (dm_impossible([shift.name]) if unreachable else ""))


def taken_off(name: str | None, count: int) -> str:
    if not count:
        return f"{escape(name)} had no shift here." if name else "Nobody was on call here."
    return f"👤 {escape(name) if name else 'Everyone'} is off the roster ({plural(count, 'shift')} removed)."


def _step_words(step: Step) -> str:
    delay = ago(step.after_s)
    who = "whoever is on call" if step.on_call else escape(step.name or str(step.user))
    if step.kind == StepKind.MENTION:
        return f"after {delay} a reply here mentions {who}"
    if step.kind == StepKind.DM:
        return f"after {delay} {who} gets the alert in a direct message"
    topic = f" topic {step.thread_id}" if step.thread_id else ""
    return f"after {delay} the alert goes to chat {step.chat_id}{topic}"


def chain_text(steps: list[Step], where: str, warnings: list[str]) -> str:
    """/escalate: this topic's chain in words, and what would keep a step from reaching anyone."""
    if not steps:
        return (f"No escalation in {where}: an unanswered alert is only reminded of here. "
                "/escalate 10m oncall, 20m dm oncall sets one.")
    lines = [f"⏫ <b>Escalation in {where}</b> (/escalate {escape(', '.join(s.describe() for s in steps))})"]
    lines += [f"• {_step_words(step)}" for step in steps]
    lines.append("Any press on an alert (👀, ✅, ❌, 🔕), a recovery or a mute stops it.")
    return clip("\n".join(lines) + "".join(f"\n⚠️ {w}" for w in warnings))


def dependency_list(chat_rules: list[Dependency], deployed: tuple[Dependency, ...], devices: list[str]) -> str:
    """/depends: every dependency, how many machines it covers, and where it was set."""
    if not chat_rules and not deployed:
        return "No dependencies. /depends rack1-* on sw-rack1 sets one."

    def line(rule: Dependency, source: str) -> str:
        covered = sum(rule.covers(d) for d in devices)
        return f"• {escape(rule.pattern)} on <b>{escape(rule.parent)}</b> ({plural(covered, 'machine')}){source}"

    lines = [line(r, "") for r in chat_rules] + [line(r, " · DEPENDENCIES") for r in deployed]
    return clip(f"<b>Dependencies</b> ({len(lines)})\n" + "\n".join(lines) + "\nWhile a parent is silent or "
                "stressed, a machine behind it that goes silent sends nothing of its own: the parent's alert names it.")


def depended(rule: Dependency, devices: list[str]) -> str:
    covered = sum(rule.covers(d) for d in devices)
    text = (f"🔗 {escape(rule.pattern)} stands behind <b>{escape(rule.parent)}</b> ({plural(covered, 'machine')} "
            "now): while it is silent or stressed, their silence is its, and its alert names them.")
    if rule.parent not in devices:
        text += f"\n⚠️ No machine called {escape(rule.parent)} has reported yet."
    return text


async def _person(update: Update, who: str | None) -> tuple[int, str] | None:
    """The person a command names ("@alice", a user id) or, without a name, whose message it replies to."""
    replied = update.effective_message.reply_to_message
    if who is None:
        user: User | None = replied.from_user if replied else None
        if user is None or user.is_bot:
            return None
        await asyncio.to_thread(oncall.seen, update.effective_chat.id, user.id, user.username, user.full_name,
                                time.time())
        return user.id, f"@{user.username}" if user.username else user.full_name
    person = await asyncio.to_thread(oncall.find, update.effective_chat.id, who)
    if person is None:
        return None
    return person.user_id, f"@{person.username}" if person.username else person.name


async def oncall_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/oncall [@name <days> <hh:mm-hh:mm> | @name other | [@name] off]: the chat's on-call roster."""
    args, chat = context.args or [], update.effective_chat.id
    tz = common.settings_of(context).timezone
    reply = update.effective_message.reply_text
    if not args:
        shifts = await asyncio.to_thread(oncall.shifts, chat)
        reachable = await asyncio.to_thread(oncall.reachable, [s.user for s in shifts])
        await reply(roster(shifts, time.time(), tz, {s.user for s in shifts} - reachable), parse_mode=ParseMode.HTML)
        return
    if not await common.is_admin(update, context, "/oncall"):
        return
    named = args[0] if args[0].startswith("@") or args[0].isdigit() else None
    rest = args[1:] if named else args
    if rest == ["off"] and named is None and update.effective_message.reply_to_message is None:
        count = await asyncio.to_thread(oncall.remove_shifts, chat, None)
        await reply(taken_off(None, count))
        return
    if not (rest in (["off"], ["other"]) or len(rest) == 2):
        await reply(ONCALL_USAGE)
        return
    window = None
    if len(rest) == 2:
        try:
            window = Window.parse(rest[0], rest[1])
        except ValueError as exc:
            await reply(f"{exc}.\n{ONCALL_USAGE}")
            return
    person = await _person(update, named)
    if person is None:
        await reply(unknown_person(named) if named else ONCALL_USAGE, parse_mode=ParseMode.HTML)
        return
    user_id, name = person
    if rest == ["off"]:
        count = await asyncio.to_thread(oncall.remove_shifts, chat, user_id)
        await reply(taken_off(name, count), parse_mode=ParseMode.HTML)
        return
    shift = Shift(user_id, name, window)
    _, admin = common.who(update)
    try:
        await asyncio.to_thread(oncall.add_shift, chat, shift, admin)
    except ValueError as exc:
        await reply(f"{exc}: /oncall @name off removes some first.")
        return
    log.info("%s put %s on call in chat %d: %s", admin, name, chat, shift.describe())
    dm = await asyncio.to_thread(oncall.reachable, [user_id])
    await reply(put_on_call(shift, tz, user_id not in dm), parse_mode=ParseMode.HTML)


async def _chain_warnings(steps: list[Step], chat: int, allowed: frozenset[int], tz: tzinfo) -> list[str]:
    """What would keep a step from reaching anyone: nobody on call, a person a direct message cannot reach, a chat
    the bot may not write to."""
    warnings = []
    shifts = await asyncio.to_thread(oncall.shifts, chat)
    current = on_call(shifts, time.time(), tz)
    if any(s.on_call for s in steps) and current is None:
        warnings.append("Nobody is on call right now: an oncall step says so here instead (/oncall).")
    dm_users = {s.user for s in steps if s.kind == StepKind.DM and s.user}
    if current is not None and any(s.on_call and s.kind == StepKind.DM for s in steps):
        dm_users.add(current.user)
    reachable = await asyncio.to_thread(oncall.reachable, dm_users)
    names = {s.user: s.name for s in shifts} | {s.user: s.name for s in steps if s.user}
    warnings += [f"{names.get(u, u)} has not started me in a private chat: a dm step mentions them here instead."
                 for u in sorted(dm_users - reachable)]
    warnings += [f"Chat {s.chat_id} is not in ALLOWED_CHAT_IDS: that step is skipped." for s in steps
                 if s.kind == StepKind.CHAT and s.chat_id not in allowed]
    return warnings


async def escalate_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/escalate [steps | off]: what happens to this topic's alerts when nobody answers."""
    args, chat, thread = context.args or [], update.effective_chat.id, common.thread_of(update)
    settings = common.settings_of(context)
    reply = update.effective_message.reply_text
    where = f"topic {thread}" if thread else "this chat"
    if not args:
        steps = await asyncio.to_thread(oncall.chain, chat, thread)
        warnings = await _chain_warnings(steps, chat, settings.allowed_chat_ids, settings.timezone)
        await reply(chain_text(steps, where, warnings), parse_mode=ParseMode.HTML)
        return
    if not await common.is_admin(update, context, "/escalate"):
        return
    if args == ["off"]:
        removed = await asyncio.to_thread(oncall.remove_chain, chat, thread)
        await reply(f"⏫ No more escalation in {where}." if removed else f"{where.capitalize()} had no escalation.")
        return
    try:
        steps = parse_steps(" ".join(args), chat)
    except ValueError as exc:
        await reply(f"{exc}.\n{ESCALATE_USAGE}")
        return
    for index, step in enumerate(steps):
        if step.name:
            person = await asyncio.to_thread(oncall.find, chat, step.name)
            if person is None:
                await reply(unknown_person(step.name), parse_mode=ParseMode.HTML)
                return
            steps[index] = Step(step.after_s, step.kind, person.user_id, step.name)
    _, admin = common.who(update)
    await asyncio.to_thread(oncall.set_chain, chat, thread, steps, admin)
    log.info("%s set the escalation of chat %d topic %s: %s", admin, chat, thread,
             ", ".join(s.describe() for s in steps))
    warnings = await _chain_warnings(steps, chat, settings.allowed_chat_ids, settings.timezone)
    await reply(chain_text(steps, where, warnings), parse_mode=ParseMode.HTML)


async def depends_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/depends [<pattern> on <device> | <pattern> off]: machines that stand behind others."""
    args = context.args or []
    settings = common.settings_of(context)
    reply = update.effective_message.reply_text
    devices = [d.name for d in await asyncio.to_thread(db.devices)]
    if not args:
        rules = await asyncio.to_thread(oncall.dependencies)
        await reply(dependency_list(rules, settings.dependencies, devices), parse_mode=ParseMode.HTML)
        return
    if not await common.is_admin(update, context, "/depends"):
        return
    if len(args) == 2 and args[1] == "off" and PATTERN_RE.fullmatch(args[0]):
        removed = await asyncio.to_thread(oncall.undepend, args[0])
        deployed = any(r.pattern == args[0] for r in settings.dependencies)
        text = (f"🔗 {escape(args[0])} no longer stands behind anything." if removed
                else f"{escape(args[0])} has no dependency set here."
                + (" It is set in DEPENDENCIES where the bot runs: remove it there." if deployed else ""))
        await reply(text, parse_mode=ParseMode.HTML)
        return
    if len(args) != 3 or args[1] != "on" or not PATTERN_RE.fullmatch(args[0]) or not DEVICE_RE.fullmatch(args[2]):
        await reply(DEPENDS_USAGE)
        return
    rule = Dependency(args[0], args[2])
    if rule.pattern == rule.parent:
        await reply("A machine cannot stand behind itself.\n" + DEPENDS_USAGE)
        return
    _, admin = common.who(update)
    try:
        await asyncio.to_thread(oncall.depend, rule.pattern, rule.parent, admin)
    except ValueError as exc:
        await reply(f"{exc}: /depends <pattern> off removes some first.")
        return
    log.info("%s set %s on %s", admin, rule.pattern, rule.parent)
    await reply(depended(rule, devices), parse_mode=ParseMode.HTML)


def handlers() -> list[BaseHandler]:
    return [CommandHandler("oncall", oncall_command), CommandHandler("escalate", escalate_command),
            CommandHandler("depends", depends_command)]
