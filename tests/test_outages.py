"""A real deployment: services restart under the bot and heal without a restart of the bot, each outage is
said once, and the bot token never reaches the log."""

from __future__ import annotations

import io
import logging
import time
import uuid
from pathlib import Path

import peewee as pw
import psycopg2
import pytest

from agent.wire import Sample
from bot import db, logs
from tests.fakes.bot_process import BotProcess
from tests.fakes.samples import with_devices
from tests.fakes.scenario import CHAT, TOKEN, WAIT_S, ask, bot_env, chat_texts, message, produce, wait_until
from tests.fakes.services import KafkaBroker, PostgresCluster
from tests.fakes.telegram_api import FakeTelegram

SECRET = logs.secret_part(TOKEN)


def drop_connection(database: pw.Database, url: str) -> None:
    """Cut this thread's connection under peewee, as a server restart or a proxy would."""
    if isinstance(database, pw.PostgresqlDatabase):
        (pid,) = database.execute_sql("SELECT pg_backend_pid()").fetchone()
        other = psycopg2.connect(url)
        try:
            other.autocommit = True
            other.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            other.close()
    else:
        database.connection().close()


def test_a_batch_after_a_dropped_connection_is_stored(database_url: str) -> None:
    database = db.open_database(database_url)
    db.store_batch([Sample("pc1", 1.0, {"cpu_percent": 10.0})], [0.1], 1, [], on_stored=with_devices)
    drop_connection(database, database_url)

    new = db.store_batch([Sample("pc1", 2.0, {"cpu_percent": 20.0})], [0.2], 1, [], on_stored=with_devices)

    assert [sample.ts for sample in new] == [2.0]
    drop_connection(database, database_url)
    assert db.latest_sample("pc1").metrics["cpu_percent"] == 20.0


def test_the_token_is_masked_in_message_arguments_and_exception_text() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.Redact(SECRET))
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    try:
        logger.warning(f"Set Bot API URL: http://api/bot{TOKEN}")
        logger.warning("calling %s", f"http://api/bot{TOKEN}/getMe")
        try:
            raise RuntimeError(f"The token `{TOKEN}` was rejected by the server.")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)

    text = out.getvalue()
    assert SECRET not in text
    assert text.count("bot123456:***") == 2 and "The token `123456:***` was rejected" in text


@pytest.mark.slow
def test_postgres_restarted_under_the_bot_heals_without_a_restart(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    with PostgresCluster() as postgres:
        env = bot_env(telegram, tmp_path, postgres.url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
        produce(kafka, topic, [(b"pc1", message("pc1", time.time() - 5, cpu_percent=10.0))])
        with BotProcess(env, tmp_path / "bot.log") as bot:
            db.open_database(postgres.url)
            wait_until(lambda: db.Metric.select().count() == 1, what="the first sample stored")
            postgres.stop()
            produce(kafka, topic, [(b"pc2", message("pc2", time.time(), cpu_percent=20.0))])
            bot.wait_log("storing a batch failed")
            telegram.wait_for_message(CHAT, lambda text: "database is unreachable" in text, timeout=WAIT_S)
            postgres.start()

            wait_until(lambda: db.Metric.select().count() == 2, what="the sample sent during the outage stored")
            assert "pc2" in ask(telegram, "/status pc2")
            assert "pc1" in ask(telegram, "/status")
            bot.wait_log("storing works again")
            telegram.wait_for_message(CHAT, lambda text: "database is reachable again" in text, timeout=WAIT_S)
            assert bot.log.count("storing a batch failed") == 1
            assert bot.stop() == 0
        said = "\n".join(chat_texts(telegram))
        assert [said.count(notice) for notice in ("database is unreachable", "again")] == [1, 1]


@pytest.mark.slow
def test_a_bot_started_while_its_database_is_down_waits_for_it_and_then_stores(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    with PostgresCluster() as postgres:
        postgres.stop()
        env = bot_env(telegram, tmp_path, postgres.url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
        produce(kafka, topic, [(b"pc1", message("pc1", time.time() - 5, cpu_percent=10.0))])
        with BotProcess(env, tmp_path / "bot.log") as bot:
            bot.wait_log("the database is unreachable")
            time.sleep(4)  # a few more tries meanwhile
            assert bot.proc is not None and bot.proc.poll() is None, "the bot gave up instead of waiting"
            postgres.start()

            bot.wait_log("the database is reachable")
            assert "pc1" in ask(telegram, "/status pc1"), "the sample sent while the database was down is stored"
            assert bot.log.count("unreachable") == 1, "said once, not once per try"
            assert bot.stop() == 0


def test_a_wrong_database_url_stops_the_bot_at_once_with_one_line(
    postgres_url: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    wrong = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    bot = BotProcess(bot_env(telegram, tmp_path, wrong), tmp_path / "bot.log")
    with bot:
        assert bot.proc is not None
        assert bot.proc.wait(timeout=WAIT_S) == 1
    assert "rigwatch: cannot open DATABASE_URL" in bot.log and "no_such_database" in bot.log
    assert "unreachable" not in bot.log


@pytest.mark.slow
def test_a_bot_started_while_telegram_fails_stores_meanwhile_and_comes_up_when_it_answers(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    produce(kafka, topic, [(b"pc1", message("pc1", time.time(), cpu_percent=99.0, mem_percent=98.0))])
    telegram.set_down(True)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("cannot reach the Telegram Bot API")
        db.open_database(url)
        wait_until(lambda: db.Metric.select().count() == 1, what="a sample stored while Telegram is down")
        telegram.set_down(False)

        bot.wait_log("Telegram Bot API reachable again", timeout=WAIT_S)
        assert "pc1" in telegram.wait_for_message(CHAT, lambda text: "pc1" in text, timeout=WAIT_S)["text"]
        assert "pc1" in ask(telegram, "/status pc1")

        # Later, getUpdates fails a few times in a row: one line when it starts, one when it ends.
        telegram.fail_next("getUpdates", 502, "Bad Gateway", count=3)
        ask(telegram, "/help")  # returns the long poll in flight, so that the failing calls come next
        bot.wait_log("cannot reach the Telegram Bot API", count=2)
        assert "Rigwatch" in ask(telegram, "/help"), "answered once getUpdates works again"
        bot.wait_log("Telegram Bot API reachable again", count=2)
        assert bot.log.count("cannot reach the Telegram Bot API") == 2
        assert "Traceback" not in bot.log
        assert SECRET not in bot.log
        assert bot.stop() == 0


@pytest.mark.slow
def test_a_rejected_token_stops_the_bot_with_one_line_that_does_not_show_it(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    wrong = "654321:" + "B" * 35
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, TELEGRAM_BOT_TOKEN=wrong, LOG_LEVEL="DEBUG", SAMPLE_INTERVAL_SECONDS="0.3")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        assert bot.proc is not None
        assert bot.proc.wait(timeout=WAIT_S) != 0

    lines = bot.log.splitlines()
    assert "rejected TELEGRAM_BOT_TOKEN" in lines[-1]
    assert sum("TELEGRAM_BOT_TOKEN" in line for line in lines) == 1
    assert "Traceback" not in bot.log
    assert logs.secret_part(wrong) not in bot.log


@pytest.mark.slow
def test_a_debug_log_never_shows_the_token(telegram: FakeTelegram, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, LOG_LEVEL="DEBUG", SAMPLE_INTERVAL_SECONDS="0.3")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("Application started")
        assert "Rigwatch" in ask(telegram, "/help")
        assert bot.stop() == 0

    assert "/bot123456:***/getMe" in bot.log, "the DEBUG log shows the requests, with the token masked"
    assert SECRET not in bot.log


@pytest.mark.slow
def test_a_broker_outage_is_said_once_and_its_end_once_the_broker_answers(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    with KafkaBroker() as broker:
        broker.create_topic("metrics")
        produce(broker.bootstrap, "metrics", [(b"pc1", message("pc1", time.time() - 5, cpu_percent=10.0))])
        env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, KAFKA_TOPIC="metrics")
        with BotProcess(env, tmp_path / "bot.log") as bot:
            db.open_database(url)
            wait_until(lambda: db.Metric.select().count() == 1, what="the first sample stored")
            broker.stop()
            bot.wait_log("Kafka unreachable")
            telegram.wait_for_message(CHAT, lambda text: "Kafka is unreachable" in text, timeout=WAIT_S)
            time.sleep(3)  # librdkafka retries many times meanwhile: none of them is another line
            assert "Kafka reachable again" not in bot.log

            broker.start()  # the same port; its storage is in memory, so the topic is made again
            broker.create_topic("metrics")
            produce(broker.bootstrap, "metrics", [(b"pc2", message("pc2", time.time(), cpu_percent=20.0))])
            wait_until(lambda: db.Metric.select().count() == 2, what="a sample sent after the outage stored")
            bot.wait_log("Kafka reachable again")
            assert bot.log.count("Kafka unreachable") == 1
            assert bot.log.count("Kafka reachable again") == 1
            assert bot.log.index("Kafka unreachable") < bot.log.index("Kafka reachable again")
            telegram.wait_for_message(CHAT, lambda text: "Kafka is reachable again" in text, timeout=WAIT_S)
            assert bot.stop() == 0
    said = "\n".join(chat_texts(telegram))
    assert [said.count(notice) for notice in ("Kafka is unreachable", "again")] == [1, 1]


@pytest.mark.slow
def test_a_topic_the_bot_may_not_create_is_read_within_seconds_of_its_creation(
    kafka: str, kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path
) -> None:
    """The test broker cannot refuse to create a topic (it has no ACLs, and creates whatever it is asked to), so
    the bot is told not to create it (KAFKA_TOPIC_PARTITIONS=0), as it would be refused."""
    topic = f"metrics.later.{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic,
                  KAFKA_TOPIC_PARTITIONS="0")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log(f"Kafka topic {topic} does not exist yet")
        time.sleep(3)  # the bot looks for it meanwhile, and leaves it missing
        assert kafka_broker.partitions(topic) is None
        kafka_broker.create_topic(topic, partitions=2)
        created = time.monotonic()
        produce(kafka, topic, [(b"pc1", message("pc1", time.time(), cpu_percent=10.0))])

        db.open_database(url)
        wait_until(lambda: db.Metric.select().count() == 1, what="a sample in the new topic stored")
        assert time.monotonic() - created < 10, "read within seconds of its creation"
        assert bot.log.count("does not exist yet") == 1
        assert bot.stop() == 0


@pytest.mark.slow
def test_a_bot_waiting_for_telegram_stops_cleanly_when_asked(telegram: FakeTelegram, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    telegram.set_down(True)
    with BotProcess(bot_env(telegram, tmp_path, url, SAMPLE_INTERVAL_SECONDS="0.3"), tmp_path / "bot.log") as bot:
        bot.wait_log("cannot reach the Telegram Bot API")
        assert bot.stop() == 0
    assert "Traceback" not in bot.log
