"""Wiring: the Telegram application, its handlers and the repeating poll job."""

from __future__ import annotations

import asyncio
import logging

from telegram import BotCommand
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, TypeHandler, filters

from bot import forecast, handlers, store
from bot.active_model import ActiveModel
from bot.alerts import Alerter, ForecastAlerter
from bot.baselines import Baselines
from bot.config import Settings
from bot.poller import KafkaSource, LocalSource, Poller, poll
from ml.registry import ModelStore, StoreError

log = logging.getLogger(__name__)
COMMANDS = [
    BotCommand("status", "every machine, or /status <device> for one"),
    BotCommand("rejected", "latest invalid messages and why"),
    BotCommand("versions", "model versions and their scores"),
    BotCommand("retrain", "train a new model from data and labels (admins)"),
    BotCommand("rollback", "go back to an earlier model version (admins)"),
    BotCommand("help", "what this bot does"),
]


def build_application(settings: Settings, model_store: ModelStore) -> Application:
    """The bot, ready for run_polling; the database must already be open."""
    application = (
        Application.builder()
        .token(settings.token)
        .base_url(f"{settings.api_url}/bot")
        .base_file_url(f"{settings.api_url}/file/bot")
        .post_init(_start)
        .post_shutdown(_stop)
        .build()
    )
    application.bot_data.update(settings=settings, model=ActiveModel(model_store), retrain_lock=asyncio.Lock(),
                                baselines=Baselines(), forecaster=forecast.Forecaster(settings.forecast_hours * 3600))
    application.add_handler(TypeHandler(object, handlers.guard), group=-1)
    application.add_handler(CommandHandler(["start", "help"], handlers.help_command))
    application.add_handler(CommandHandler("status", handlers.status))
    application.add_handler(CommandHandler("rejected", handlers.rejected_command))
    application.add_handler(CommandHandler("versions", handlers.versions_command))
    # Retraining takes a while: it must not hold up /status and the buttons.
    application.add_handler(CommandHandler("retrain", handlers.retrain_command, block=False))
    application.add_handler(CommandHandler("rollback", handlers.rollback_command))
    application.add_handler(CallbackQueryHandler(handlers.label_button, pattern=r"^label:"))
    application.add_handler(CallbackQueryHandler(handlers.forecast_button, pattern=r"^forecast:"))
    application.add_handler(CallbackQueryHandler(handlers.activate_button, pattern=r"^activate:"))
    application.add_handler(CallbackQueryHandler(handlers.cancel_button, pattern=r"^cancel$"))
    application.add_handler(CallbackQueryHandler(handlers.invalid_button))
    application.add_handler(MessageHandler(filters.COMMAND, handlers.unknown_command))
    application.add_error_handler(handlers.on_error)
    return application


async def _start(application: Application) -> None:
    settings: Settings = application.bot_data["settings"]
    model: ActiveModel = application.bot_data["model"]
    if not settings.allowed_chat_ids:
        log.warning("ALLOWED_CHAT_IDS is empty: the bot answers nobody and sends no alerts")
    try:
        await asyncio.to_thread(model.ensure)
    except StoreError as exc:
        # The poller retries; meanwhile samples are stored without a prediction. Admins must know.
        for chat_id in settings.allowed_chat_ids:
            await application.bot.send_message(chat_id, f"⚠️ No model could be loaded: {exc}")
    if settings.kafka_bootstrap:
        source: KafkaSource | LocalSource = KafkaSource(settings)
        interval = settings.poll_interval_s
        log.info("reading metrics from Kafka topic %s", settings.kafka_topic)
    else:
        source = LocalSource()
        interval = settings.sample_interval_s
        log.info("single-host mode: watching this machine as %s every %g s", source.device, interval)
    baselines: Baselines = application.bot_data["baselines"]
    forecaster: forecast.Forecaster = application.bot_data["forecaster"]
    await asyncio.to_thread(_rebuild_forecasts, forecaster)
    alerter = Alerter(settings.allowed_chat_ids, settings.alert_threshold, settings.alert_repeat_s, baselines)
    poller = Poller(source, model, alerter)
    poller.after_store.append(ForecastAlerter(settings.allowed_chat_ids, forecaster, baselines).alert)
    application.bot_data["poller"] = poller
    application.job_queue.run_repeating(poll, interval=interval, first=0, data=poller, name="poll")
    try:
        await application.bot.set_my_commands(COMMANDS)
    except TelegramError as exc:  # only the command menu is missing: everything else works
        log.warning("could not set the command menu: %s", exc.message)


def _rebuild_forecasts(forecaster: forecast.Forecaster) -> None:
    """The trends as they were before the restart, from the store's last window of samples; an episode
    alerted within that window stays alerted, so a restart does not repeat it."""
    window = forecast.REBUILD_S
    forecaster.observe(store.recent_per_device(window, list(forecast.TRENDED)))
    forecaster.restore_alerted(store.forecasts_alerted_since(window))
    log.info("forecasts rebuilt for %d devices", len({device for device, _ in forecaster.latest}))


async def _stop(application: Application) -> None:
    poller: Poller | None = application.bot_data.get("poller")
    if poller is not None:
        await asyncio.to_thread(poller.source.close)
