"""Fixtures shared by the tests: the real services they talk to, empty stores on each engine, and a decider
on a store."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import peewee as pw
import pytest

from tests.fakes.scenario import TOKEN
from tests.fakes.services import KafkaBroker, postgres_cluster, s3_server
from tests.fakes.telegram_api import FakeTelegram

if TYPE_CHECKING:
    from bot.pipeline.decide import Decider
    from bot.pipeline.lifecycle import Incidents


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A Tansu Kafka broker for the whole session."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka(kafka_broker: KafkaBroker) -> str:
    """The bootstrap address of the session's broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def topic(kafka_broker: KafkaBroker) -> str:
    """A new topic of one partition on the session's broker."""
    name = f"metrics.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(name)
    return name


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    """A fake Bot API server that accepts the token in TOKEN."""
    with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of an empty database on a throwaway PostgreSQL cluster."""
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pw.Database]:
    """An empty store on each engine we ship on: a new SQLite file, or the session's Postgres emptied."""
    from bot import db
    from tests.fakes.stores import empty_postgres

    if request.param == "sqlite":
        database = db.open_database(f"sqlite:///{tmp_path}/rigwatch.sqlite3")
    else:
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
        database = db.open_database(url)
    yield database
    database.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store on each engine, for a bot process: a SQLite file in a folder not made yet, or
    the session's Postgres emptied."""
    from tests.fakes.stores import empty_postgres

    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/rigwatch.sqlite3"
    url = request.getfixturevalue("postgres_url")
    empty_postgres(url)
    return url


@pytest.fixture
def incidents(database: pw.Database) -> Incidents:
    """The incidents of the store under RULES, replying with the bot's texts."""
    from bot.chat import alerts
    from bot.pipeline.lifecycle import Incidents
    from tests.fakes.incidents import RULES

    return Incidents(RULES, alerts.reply)


@pytest.fixture
def decider(incidents: Incidents) -> Decider:
    """A decider on those incidents, as the poller's: disk_percent past 90 drives an alert."""
    from bot.pipeline.baselines import Baselines
    from bot.pipeline.decide import Decider
    from bot.pipeline.forecast import Forecaster
    from tests.fakes.incidents import drivers

    return Decider(incidents, drivers, Forecaster(4 * 3600), Baselines())


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, with the AWS variables boto3 needs pointing at it."""
    with s3_server() as endpoint:
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
        saved = {k: os.environ.get(k) for k in names}
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                          AWS_ENDPOINT_URL=endpoint)
        yield endpoint
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
