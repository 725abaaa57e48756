"""The composition root: builds the Telegram application from the three rooms (chat, pipeline, database) and
runs the process.

Metrics are read and stored from the first second; the chat side joins as soon as the Bot API answers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

import peewee as pw
from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, MessageHandler, TypeHandler
from telegram.ext import filters as tg_filters

from bot import db
from bot.chat import alerts, common, digest, history, jobs, model_admin, oncall, start, status, teams, tolerance
from bot.chat.bot_api import PollingRequest, TelegramLink, connect
from bot.chat.rate_limits import CommandBudget, FairRateLimiter
from bot.chat.sender import Sender
from bot.config import Settings
from bot.db import retention
from bot.db.outbox import Route
from bot.intake.sources import KafkaSource, LocalSource
from bot.pipeline import forecast, learnt
from bot.pipeline.active_model import ActiveModel, ModelKeeper
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.disks import ActiveDiskModel, Disks
from bot.pipeline.escalation import Escalator
from bot.pipeline.lifecycle import Incidents, Rules
from bot.pipeline.poller import Poller
from bot.pipeline.tolerating import Tolerances
from bot.pipeline.watch import Watch
from ml.store import ModelStore, StoreError, open_disk_store

if TYPE_CHECKING:
    from bot.intake.remote_write_http import KafkaSink, RemoteWriteServer

log = logging.getLogger(__name__)
RETENTION_FIRST_S = 300.0
OUTAGE_CHECK_S = 5.0  # how often the chats' view of Kafka and the database is brought up to date
GC_YOUNG = 50_000  # allocations between collections of the youngest generation (Python's default: 700)
SEND_EVERY_S = 1.0  # the outbox is also delivered at once after a batch that queued a message
WATCH_EVERY_S = 15.0  # silent machines, reminders and ended mutes (more often for shorter settings)
RESTORE_RETRY_MAX_S = 30.0


def build_application(settings: Settings, model_store: ModelStore) -> Application:
    """The bot, ready for serve(); the database must already be open."""
    link = TelegramLink()
    application = (
        Application.builder()
        .token(settings.token)
        .base_url(f"{settings.api_url}/bot")
        .base_file_url(f"{settings.api_url}/file/bot")
        .get_updates_request(PollingRequest(link))
        # Telegram's flood limits: at most ~30 messages a second, ~20 a minute per group, part of it kept for
        # alerts. A 429 still reaching the sender pauses it for as long as Telegram asks.
        .rate_limiter(FairRateLimiter())
        .build()
    )
    tolerances = Tolerances()
    disk_model = ActiveDiskModel(open_disk_store(settings.model_store, settings.model_signing_key))
    application.bot_data.update(
        settings=settings, model=ActiveModel(model_store), disk_model=disk_model, retrain_lock=asyncio.Lock(),
        link=link,
        baselines=Baselines(), forecaster=forecast.Forecaster(settings.forecast_hours * 3600, tolerances.edge),
        command_budget=CommandBudget(), tolerances=tolerances,
    )
    application.add_handler(TypeHandler(object, common.guard), group=-1)
    for conversation in (start, status, alerts, history, teams, oncall, tolerance, model_admin, digest):
        application.add_handlers(conversation.handlers())
    application.add_handler(CallbackQueryHandler(common.invalid_button))
    application.add_handler(MessageHandler(tg_filters.COMMAND, common.unknown_command))
    application.add_error_handler(common.on_error)
    return application


async def serve(application: Application, worker: bool = False) -> None:
    """Run until SIGTERM or SIGINT. Raises InvalidToken when the Bot API rejects the token: that cannot heal.

    A worker ingests, predicts, decides incidents and sends their messages, but does not poll Telegram for
    updates: several workers share the partitions of one consumer group, and exactly one plain bot process
    answers commands and buttons (Telegram refuses two pollers of one token) and watches for silences.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await _start_ingestion(application, watch_silences=not worker)
    link: TelegramLink = application.bot_data["link"]
    try:
        if not await _unless_stopped(connect(application, link), stop):
            return
        if worker:
            log.info("worker: ingesting and sending; commands and buttons are the bot process's")
            await stop.wait()
            return
        # Telegram answered getMe a moment ago: a failure of the bootstrap calls now is retried too.
        await application.updater.start_polling(
            allowed_updates=Update.ALL_TYPES, bootstrap_retries=-1, error_callback=link.failed
        )
        await application.start()
        await _greet(application)
        await stop.wait()
    finally:
        await _shut_down(application)


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Await `work` unless `stop` is set first (then cancel it); whether it finished."""
    task, stopping = asyncio.create_task(work), asyncio.create_task(stop.wait())
    await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        task.cancel()
        return False
    task.result()  # raises what the work raised
    return True


async def _start_ingestion(application: Application, watch_silences: bool) -> None:
    """Load the model and start ingestion, before and whatever Telegram does; the watch of silences,
    reminders and mutes, retention and the digests run in one process of a fleet only (`watch_silences`)."""
    settings: Settings = application.bot_data["settings"]
    model: ActiveModel = application.bot_data["model"]
    queue = application.job_queue
    if not settings.allowed_chat_ids:
        log.warning("ALLOWED_CHAT_IDS is empty: the bot answers nobody and sends no alerts; send it /start (in a "
                    "private chat or a group) and its refusal tells you that chat's id")
    # One try before the first batch, so a reachable store predicts from the first sample; then the keeper
    # goes on trying with backoff while the store is down or refuses, and samples are stored without a prediction.
    keeper = ModelKeeper(model, jobs.model_news_teller(application.bot, settings.allowed_chat_ids))
    application.bot_data["model_keeper"] = asyncio.create_task(keeper.keep_loaded(), name="model")
    # The consumer joins its group in librdkafka's threads while the model loads: a second or so of each start.
    if settings.kafka_bootstrap:
        source: KafkaSource | LocalSource = KafkaSource(settings)
        interval = settings.poll_interval_s
        log.info("reading metrics from Kafka topic %s", settings.kafka_topic)
    else:
        source = LocalSource()
        interval = settings.sample_interval_s
        log.info("single-host mode: watching this machine as %s every %g s", source.device, interval)
    await keeper.tried.wait()
    baselines: Baselines = application.bot_data["baselines"]
    forecaster: forecast.Forecaster = application.bot_data["forecaster"]
    tolerances: Tolerances = application.bot_data["tolerances"]
    await asyncio.to_thread(tolerances.refresh)  # the forecasts aim at the machines' own edges
    forecaster.begin_restoring()  # the trends come back beside ingestion, once it runs (_restore_learnt)
    route = Route(tuple(sorted(settings.allowed_chat_ids)), settings.alert_group_s, settings.alert_group_min)
    rules = Rules(settings.alert_threshold, settings.alert_hysteresis, settings.recover_samples,
                  settings.alert_repeat_s, settings.silent_after_s, route, settings.timezone, settings.dependencies)
    incidents = Incidents(rules, alerts.reply)
    disk_model: ActiveDiskModel = application.bot_data["disk_model"]
    try:
        await asyncio.to_thread(disk_model.ensure)
    except StoreError as exc:  # disks are recorded meanwhile; /retrain disk or a restart tries again
        log.error("no disk model loaded: %s; disks are recorded but not judged", exc)
    decider = Decider(incidents, model.drivers, forecaster, baselines, tolerances, disks=Disks(disk_model))
    sender = Sender(alerts.renderer(baselines, tolerances), alerts.group_message, settings.alert_edit_s)
    poller = Poller(source, model, decider, partial(sender.run, application.bot), interval, tolerances)
    application.bot_data.update(poller=poller, sender=sender)
    queue.run_repeating(jobs.send, interval=SEND_EVERY_S, first=1.0, data=sender, name="send")
    if db.checkpoint_in_background():
        queue.run_repeating(jobs.in_thread, interval=db.CHECKPOINT_S, data=db.checkpoint, name="checkpoint")
    if watch_silences:
        # Often enough that a silence, a reminder or the end of a mute is seen within a quarter of its time.
        every = min(WATCH_EVERY_S, (settings.silent_after_s or WATCH_EVERY_S * 4) / 4,
                    (settings.alert_repeat_s or WATCH_EVERY_S * 4) / 4)
        queue.run_repeating(jobs.watch, interval=every, first=every,
                            data=jobs.Watching(Watch(incidents, model.drivers, tolerances,
                                                     Escalator(incidents, alerts.call)), sender), name="watch")
        # In one process of a fleet: two downsampling the same device at once would count samples twice.
        # Soon after start as well as daily: a bot restarted every day still downsamples.
        queue.run_repeating(jobs.in_thread, interval=retention.DAY_S, first=RETENTION_FIRST_S,
                            data=partial(retention.daily, settings.retention_days), name="retention")
        # The digests too: claimed in the database, so even two bot processes would send each period once.
        queue.run_repeating(digest.send_due, interval=digest.EVERY_S, first=digest.FIRST_S,
                            data=digest.Digesting(settings, forecaster, model, time.time()), name="digest")
    watched = _watched(source)
    queue.run_repeating(jobs.tell_outages, interval=OUTAGE_CHECK_S, data=watched, name="outages")
    # Everything made so far (libraries, the model) lives as long as the process: the garbage collector need
    # not walk it again. A batch's many short-lived objects go by their reference counts, nearly none in a
    # cycle: the youngest generation is collected less often (docs/performance.md, the hot path).
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    # Application.start() would start the job queue only once Telegram answers.
    await queue.start()
    poller.start()
    if settings.remote_write_listen is not None:
        server = await _start_remote_write(application, settings, poller)
        watched.append(jobs.WatchedService(lambda: server.receiving, jobs.REMOTE_WRITE_IDLE, jobs.REMOTE_WRITE_BACK))
    stop = threading.Event()
    application.bot_data["restoring"] = (stop, asyncio.create_task(_restore_learnt(forecaster, stop), name="restore"))


async def _start_remote_write(application: Application, settings: Settings, poller: Poller) -> RemoteWriteServer:
    """The remote-write receiver: in single-host mode its samples go through the poller's store; in fleet mode
    to the Kafka topic, for every worker to share. Imported only when it is on: its HTTP server, protobuf and
    snappy take about 27 MiB that a bot without it need not hold."""
    from bot.intake.remote_write import Receiver
    from bot.intake.remote_write_http import KafkaSink, RemoteWriteServer

    if settings.kafka_bootstrap:
        sink = KafkaSink(settings.kafka_bootstrap, settings.kafka_topic,
                         store_rejects=lambda rejects: db.store_batch([], [], None, rejects))
        receiver = Receiver(sink, settings.remote_write_device_label, held=db.HeldParts())
        after_store = None
        application.bot_data["remote_write_sink"] = sink
    else:
        receiver = Receiver(poller.store, settings.remote_write_device_label, held=db.HeldParts(),
                            store_lock=poller.store_lock)
        after_store = poller.send_queued
    host, port = settings.remote_write_listen or (None, 0)
    server = RemoteWriteServer(receiver, host, port, settings.remote_write_token, after_store)
    try:
        await server.start()
    except OSError as exc:
        raise SystemExit(f"rigwatch: cannot listen on REMOTE_WRITE_LISTEN ({exc.strerror or exc})") from None
    application.bot_data["remote_write"] = server
    return server


def _watched(source: KafkaSource | LocalSource) -> list[jobs.WatchedService]:
    services = [jobs.WatchedService(db.reachable, jobs.DATABASE_DOWN, jobs.DATABASE_UP)]
    if isinstance(source, KafkaSource):
        services.append(jobs.WatchedService(lambda: source.reachable, jobs.KAFKA_DOWN, jobs.KAFKA_UP))
    return services


async def _greet(application: Application) -> None:
    """Once Telegram answers: set the command menu."""
    try:
        await application.bot.set_my_commands(start.COMMANDS)
    except TelegramError as exc:  # the bot works without the menu
        log.warning("could not set the command menu: %s", exc.message)


async def _restore_learnt(forecaster: forecast.Forecaster, stop: threading.Event) -> None:
    """The trends as they were before the restart, read back beside ingestion: one kept row per machine, and the
    last hours of the machines that have none (bot/pipeline/learnt.py). Tried again while the database fails."""
    wait_s = 1.0
    while True:
        try:
            done = await asyncio.to_thread(learnt.restore, forecaster, stop)
            break
        except pw.PeeweeException as exc:  # the machines not back yet wait: their samples are held meanwhile
            log.error("restoring the forecasts failed (%s); trying again in %g s", exc, wait_s)
        if await asyncio.to_thread(stop.wait, wait_s):
            return
        wait_s = min(RESTORE_RETRY_MAX_S, 2 * wait_s)
    if not stop.is_set():
        log.info("forecasts restored for %d devices in %.2f s: %d kept states and %d samples after them read, "
                 "%d devices rebuilt from %d recent samples", done.states + done.rebuilt, done.seconds, done.states,
                 done.after, done.rebuilt, done.recent)


def _save_learnt(application: Application) -> None:
    forecaster: forecast.Forecaster = application.bot_data["forecaster"]
    try:
        with db.transaction():
            saved = learnt.save(forecaster, application.bot_data["baselines"], time.time(), everything=True)
    except pw.PeeweeException as exc:
        log.warning("could not keep the forecasts' trends (%s); the next start reads the samples after the kept "
                    "ones", exc)
        return
    log.info("kept the trends of %d devices", saved)


async def _shut_down(application: Application) -> None:
    server: RemoteWriteServer | None = application.bot_data.get("remote_write")
    if server is not None:
        await server.stop()  # before the poller: the scrapes it still holds are stored and alerted
    sink: KafkaSink | None = application.bot_data.get("remote_write_sink")
    if sink is not None:
        await asyncio.to_thread(sink.close)
    poller: Poller | None = application.bot_data.get("poller")
    if poller is not None:
        await poller.stop()  # its messages go out while the bot can still send
    restoring: tuple[threading.Event, asyncio.Task[None]] | None = application.bot_data.get("restoring")
    if restoring is not None:
        restoring[0].set()
        await restoring[1]
        # What was learnt since it was last written: the next start reads it back instead of the samples.
        await asyncio.to_thread(_save_learnt, application)
    keeper: asyncio.Task[None] | None = application.bot_data.get("model_keeper")
    if keeper is not None:
        keeper.cancel()
    if application.updater.running:
        await application.updater.stop()
    if application.running:
        await application.stop()  # stops the job queue too, waiting for a running job
    else:
        await application.job_queue.stop()
    await application.shutdown()
    # Its connections are open when getMe never succeeded, and the application did not count as initialized.
    await application.bot.shutdown()
    if poller is not None:
        await asyncio.to_thread(poller.source.close)
