"""What the bot says about the model: retrains, versions, rollbacks and the model's own news. Pure functions
from data to HTML text and keyboards, like bot/chat/texts.py, made of the words of bot/chat/words.py."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.chat import callbacks
from bot.chat.words import escape, pre
from bot.pipeline.active_model import ModelNews
from ml.retrain import Retrained
from ml.store import ModelVersion
from ml.versions import detail as version_detail
from ml.versions import table as versions_table

RETRAIN_RUNNING = "A retrain is already running; its result will be posted here."
ROLLBACK_USAGE = "Usage: /rollback or /rollback <version>, e.g. /rollback 3"
VERSIONS_USAGE = "Usage: /versions or /versions <version>, e.g. /versions 3"


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


def activate_keyboard(version: int, label: str) -> InlineKeyboardMarkup:
    """A confirmation button that activates a model version, and one that cancels."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(label, callback_data=callbacks.activate(version)),
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
