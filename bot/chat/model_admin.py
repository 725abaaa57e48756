"""The model from the chat: /retrain, /versions, /rollback (admins, but /versions), their confirmation buttons,
and what the chats hear about the model."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, ContextTypes

from bot import db
from bot.chat import callbacks, common
from bot.chat.formatting import escape, pre
from bot.pipeline.active_model import ActiveModel, ModelNews
from bot.pipeline.disks import ActiveDiskModel
from ml import artifact, disks
from ml.data import training_frame
from ml.features import FEATURES
from ml.retrain import Retrained, retrain
from ml.store import ModelVersion, StoreError, UnknownVersion
from ml.versions import version_detail, versions_table

log = logging.getLogger(__name__)


CANCELLED = "Cancelled."
CANCELLED_NOTHING_CHANGED = "Cancelled: nothing changed."
RETRAIN_RUNNING = "A retrain is already running; its result will be posted here."
ROLLBACK_USAGE = ("Usage: /rollback [version], e.g. /rollback 3; /rollback disk [version] for the disk model")
VERSIONS_USAGE = "Usage: /versions [version], e.g. /versions 3; /versions disk [version] for the disk model"
DISK = "disk"  # the first word of /versions, /retrain and /rollback about the disk model
MIN_FAILED_DISKS = 2  # disks labelled failing (✅ replaced) before the disk model can learn from the fleet


def retrain_progress(step: str) -> str:
    """The progress message of a running retrain, edited at every step."""
    return f"⏳ Retraining: {escape(step)}…"


def _score(scores: dict | None, name: str) -> str:
    value = (scores or {}).get(name)
    return "n/a" if value is None else f"{value:.3f}"


def retrain_result(result: Retrained, activated: bool) -> str:
    """Old and new model side by side on the same holdout, and which one is active now."""
    new, meta = result.saved.version, result.saved.meta
    old = f"v{result.old_version} (old)" if result.old_version else "no model"
    rows = [f"{'':<10} {old:>12} {'v' + str(new) + ' (new)':>12}"]
    for name, label in (("f1", "F1"), ("precision", "precision"), ("recall", "recall"), ("roc_auc", "ROC AUC")):
        rows.append(f"{label:<10} {_score(result.old_scores, name):>12} {_score(result.new_scores, name):>12}")
    if activated:
        verdict = f"✅ v{new} is active now: {escape(result.reason)}."
    else:
        verdict = f"⚠️ v{result.old_version} stays active: {escape(result.reason)}. v{new} is saved; activate it anyway?"
    return (
        f"<b>Retrain done</b>: v{new} trained on {meta['rows']} samples and {meta['labels']} labels "
        f"(+{meta['synthetic']} synthetic)\n{pre(rows)}\n"
        f"Holdout: {escape(meta['holdout'])}, {meta['holdout_rows']} rows.\n{verdict}"
    )


def activate_keyboard(version: int, label: str, disk: bool = False) -> InlineKeyboardMarkup:
    """A confirmation button that activates a version (of the disk model with `disk`), and one that cancels."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(label, callback_data=callbacks.activate(version, disk)),
        InlineKeyboardButton("Cancel", callback_data=callbacks.CANCEL),
    ]])


def versions(listing: list[ModelVersion], active: int | None) -> str:
    """/versions: newest first, with scores and the active one marked."""
    if not listing:
        return "The model store is empty."
    return f"<b>Model versions</b> (▶ active)\n{pre(versions_table(listing, active).splitlines())}"


def version(record: ModelVersion, active: int | None) -> str:
    """/versions <n>: one version in full, with its calibration on the holdout."""
    return f"<b>Model v{record.version}</b>\n{pre(version_detail(record, active).splitlines())}"


def _figures(meta: dict) -> str:
    """'27/60 warned ≥ 7 days ahead at 1.90 % of healthy disks flagged': a disk model's held-out figures."""
    found = meta.get("evaluation", {}).get("model", {})
    if not found:
        return "n/a"
    return (f"{found['ahead']}/{found['failing']} warned ≥ 7 days ahead at {100 * found['flagged_share']:.2f} % of "
            "healthy disks flagged")


def disk_versions(listing: list[ModelVersion], active: int | None) -> str:
    """/versions disk: the disk model's versions, newest first, with what each was trained on and how it scored
    on drives it never saw."""
    if not listing:
        return "The disk model's store is empty: the bot saves the model that ships there on start."
    lines = []
    for v in reversed(listing):
        trained = v.meta.get("trained_on", {})
        lines.append(f"{'▶' if v.version == active else ' '} v{v.version} {v.created[:16].replace('T', ' ')}  "
                     f"{trained.get('drives', 0)} drives, {trained.get('failed', 0)} failed; threshold "
                     f"{v.meta.get('threshold', 0):.3f}; {_figures(v.meta)}")
    return f"<b>Disk model versions</b> (▶ active)\n{pre(lines)}"


def disk_retrain_result(version: int, meta: dict) -> str:
    """The disk model trained on the fleet's own disks: saved, and activated only by an admin's button."""
    trained = meta.get("trained_on", {})
    return (f"<b>Disk model v{version} trained</b> on {trained.get('drives', 0)} disks of the fleet "
            f"({trained.get('failed', 0)} labelled failing, {trained.get('labels', 0)} labels) over "
            f"{trained.get('readings', 0)} daily readings.\nOn disks it never saw: {escape(_figures(meta))}.\n"
            "It is saved, not active: the fleet's own labels are few, so a person decides.")


def too_few_failed(failed: int) -> str:
    return (f"The disk model learns from the fleet's disks once at least {MIN_FAILED_DISKS} are labelled failing "
            f"(✅ Replaced on a disk's alert); {failed} {'is' if failed == 1 else 'are'} so far. The model that "
            "ships stays in use.")


def confirm_rollback(current: int | None, target: ModelVersion) -> str:
    """The question before a rollback."""
    f1 = target.meta.get("scores", {}).get("f1")
    return (
        f"Roll back from v{current} to <b>v{target.version}</b> (created {escape(target.created[:16])}, "
        f"F1 {'n/a' if f1 is None else f'{f1:.3f}'})?"
    )


def model_news(news: ModelNews) -> str:
    """What the chats hear about the model: it cannot be loaded, it is loaded again, versions converted."""
    if news.error is not None:
        return (f"⚠️ No model could be loaded: {news.error}\nSamples are stored without a prediction; the bot keeps "
                "trying and says so here once a model is loaded.")
    if news.loaded is not None:
        return f"✅ Model v{news.loaded} is loaded: predictions resume."
    if news.migrated:
        versions = ", ".join(f"v{n}" for n in news.migrated)
        return f"Model versions {versions} were pickles: converted to skops under the same numbers."
    return news.store_said or ""


def store_unreadable(error: Exception) -> str:
    return f"The model store cannot be read: {error}"


def no_such_version(wanted: int, known: list[int]) -> str:
    return f"There is no model v{wanted}. Versions: {', '.join(f'v{n}' for n in known) or 'none'}"


def nothing_older(version: int | None) -> str:
    return f"v{version} is the oldest version: nothing to roll back to."


def already_active(version: int) -> str:
    return f"v{version} is already active."


def retrain_failed(error: Exception, version: int | None) -> str:
    return f"❌ Retrain failed: {escape(str(error))}\nThe active model is unchanged (v{version})."


def activate_anyway(version: int) -> str:
    return f"Activate v{version} anyway"


def roll_back_to(version: int) -> str:
    return f"Roll back to v{version}"


def activating(version: int) -> str:
    return f"Activating v{version}…"


def version_refused_kept(version: int, error: Exception, kept: int | None) -> str:
    return (f"❌ Model v{version} refused: {escape(str(error))}\n"
            f"{f'v{kept}' if kept else 'no model'} stays active.")


def no_version(version: int) -> str:
    return f"There is no model v{version}."


def version_activated(version: int, who: str) -> str:
    return f"✅ Model v{version} is active now (by {escape(who)})."


def _of_disks(context: ContextTypes.DEFAULT_TYPE) -> tuple[bool, list[str]]:
    """Whether a command is about the disk model (its first word is "disk"), and its other words."""
    args = context.args or []
    return (True, args[1:]) if args and args[0].lower() == DISK else (False, args)


def _holder(context: ContextTypes.DEFAULT_TYPE, disk: bool) -> ActiveModel | ActiveDiskModel:
    return context.bot_data["disk_model"] if disk else common.model_of(context)


async def retrain_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/retrain (admins): train off the event loop, edit a progress message, compare, activate if not worse;
    /retrain disk: train the disk model on the fleet's disks and labels, saved for an admin to activate."""
    if not await common.is_admin(update, context, "/retrain"):
        return
    lock: asyncio.Lock = context.bot_data["retrain_lock"]
    if lock.locked():
        await update.effective_message.reply_text(RETRAIN_RUNNING)
        return
    disk, _args = _of_disks(context)
    if disk:
        async with lock:
            await _retrain_disks(update, context)
        return
    async with lock:
        model = common.model_of(context)
        progress = await update.effective_message.reply_text(retrain_progress("starting"))
        loop = asyncio.get_running_loop()
        edits: list[concurrent.futures.Future] = []

        def report(step: str) -> None:  # called from the training thread
            edits.append(asyncio.run_coroutine_threadsafe(common.edit(progress, retrain_progress(step)), loop))

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
            await common.edit(progress, retrain_failed(failure, model.version))
            return
        markup = None if result.better else activate_keyboard(result.saved.version,
                                                              activate_anyway(result.saved.version))
        await common.edit(progress, retrain_result(result, activated=result.better), markup)


async def _retrain_disks(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Train the disk model on the fleet's daily readings and people's labels; save it, offer to activate it."""
    labels = await asyncio.to_thread(db.disks.labels)
    failed = sum(value == 1 for value in labels.values())
    if failed < MIN_FAILED_DISKS:
        await update.effective_message.reply_text(too_few_failed(failed))
        return
    progress = await update.effective_message.reply_text(retrain_progress("training the disk model"))
    store = _holder(context, True).store
    try:
        pipeline, meta = await asyncio.to_thread(disks.train, await asyncio.to_thread(db.disks.every_day), labels)
        saved = await asyncio.to_thread(store.save, artifact.dumps(pipeline), meta)
    except (StoreError, ValueError) as exc:  # too few disks of one kind to score, or the store is out
        await common.edit(progress, retrain_failed(exc, _holder(context, True).version))
        return
    await common.edit(progress, disk_retrain_result(saved.version, meta),
                      activate_keyboard(saved.version, f"Activate disk model v{saved.version}", disk=True))


async def versions_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/versions: every model version, newest first; /versions <n>: one in full; /versions disk: the disk
    model's."""
    disk, args = _of_disks(context)
    if len(args) > 1 or (args and not re.fullmatch(r"v?\d{1,9}", args[0])):
        await update.effective_message.reply_text(VERSIONS_USAGE)
        return
    model_store = _holder(context, disk).store
    try:
        listing, active = await asyncio.to_thread(lambda: (model_store.versions(), model_store.active()))
    except StoreError as exc:
        await update.effective_message.reply_text(store_unreadable(exc))
        return
    if disk:
        chosen = [r for r in listing if not args or r.version == int(args[0].lstrip("v"))]
        await update.effective_message.reply_text(disk_versions(chosen, active), parse_mode=ParseMode.HTML)
        return
    if not args:
        await update.effective_message.reply_text(versions(listing, active), parse_mode=ParseMode.HTML)
        return
    wanted = int(args[0].lstrip("v"))
    record = next((r for r in listing if r.version == wanted), None)
    if record is None:
        await update.effective_message.reply_text(no_such_version(wanted, [r.version for r in listing]))
        return
    await update.effective_message.reply_text(version(record, active), parse_mode=ParseMode.HTML)


async def rollback_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/rollback [version] (admins): ask to confirm going back to the previous or the given version."""
    if not await common.is_admin(update, context, "/rollback"):
        return
    disk, args = _of_disks(context)
    if len(args) > 1 or (args and not re.fullmatch(r"v?\d{1,9}", args[0])):
        await update.effective_message.reply_text(ROLLBACK_USAGE)
        return
    model = _holder(context, disk)
    try:
        listing = await asyncio.to_thread(model.store.versions)
    except StoreError as exc:
        await update.effective_message.reply_text(store_unreadable(exc))
        return
    by_number = {v.version: v for v in listing}
    if args:
        target = int(args[0].lstrip("v"))
        if target not in by_number:
            await update.effective_message.reply_text(no_such_version(target, sorted(by_number)))
            return
    else:
        older = [n for n in by_number if model.version is None or n < model.version]
        if not older:
            await update.effective_message.reply_text(nothing_older(model.version))
            return
        target = max(older)
    if target == model.version:
        await update.effective_message.reply_text(already_active(target))
        return
    await update.effective_message.reply_text(
        confirm_rollback(model.version, by_number[target]), parse_mode=ParseMode.HTML,
        reply_markup=activate_keyboard(target, roll_back_to(target), disk),
    )


async def activate_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press on "Roll back to vN" or "Activate vN anyway" (admins): verify and activate that version."""
    query = update.callback_query
    if not await common.is_admin(update, context, "this button"):
        return
    parsed = callbacks.parse_activate(query.data)
    if parsed is None:
        await query.answer(common.INVALID_BUTTON)
        return
    disk, version = parsed
    await query.answer(activating(version))  # loading a version can take a while: the button stops spinning
    model = _holder(context, disk)
    try:
        await asyncio.to_thread(model.activate, version)
    except UnknownVersion:
        await common.edit(query.message, no_version(version))
        return
    except StoreError as exc:
        await common.edit(query.message, version_refused_kept(version, exc, model.version))
        return
    await common.edit(query.message, version_activated(version, common.who(update)[1]))


async def cancel_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Cancel on a confirmation (admins): nothing changes."""
    if not await common.is_admin(update, context, "this button"):
        return
    await update.callback_query.answer(CANCELLED)
    await common.edit(update.callback_query.message, CANCELLED_NOTHING_CHANGED)


def handlers() -> list[BaseHandler]:
    # Retraining takes a while: it must not hold up /status and the buttons.
    return [CommandHandler("versions", versions_command), CommandHandler("retrain", retrain_command, block=False),
            CommandHandler("rollback", rollback_command),
            CallbackQueryHandler(activate_button, pattern=callbacks.ACTIVATE_PATTERN),
            CallbackQueryHandler(cancel_button, pattern=callbacks.CANCEL_PATTERN)]
