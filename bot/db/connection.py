"""The connection: classes that reconnect after an outage, SQLite's checkpoints, and which engine it is."""

from __future__ import annotations

import logging

import peewee as pw
from playhouse.db_url import register_database
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase
from playhouse.shortcuts import ReconnectMixin

from schema import tables
from schema.tables import db

log = logging.getLogger(__name__)


class _Reconnecting(ReconnectMixin):
    """Opens a new connection when a statement outside a transaction, or the BEGIN of one, finds the old
    connection dropped (the server restarted, a proxy cut it, it was closed under us): the next batch or
    command heals instead of failing until the bot restarts. Inside a transaction it never reconnects
    silently; that batch fails, is read again, and the next BEGIN reconnects."""

    reconnect_errors = (
        (pw.OperationalError, "server closed the connection"),  # psycopg2
        (pw.OperationalError, "terminating connection"),  # psycopg2 and psycopg 3
        (pw.OperationalError, "the connection is closed"),  # psycopg 3
        (pw.OperationalError, "connection is lost"),  # psycopg 3
        (pw.InterfaceError, "connection already closed"),  # psycopg2, after a failure like the above
        (pw.ProgrammingError, "cannot operate on a closed database"),  # sqlite3
    )
    reachable = True  # False from a connection attempt that failed until one that works

    def connect(self, reuse_if_open: bool = False) -> bool:
        try:
            opened = super().connect(reuse_if_open)
        except pw.OperationalError:
            self.reachable = False
            raise
        self.reachable = True
        return opened


class ReconnectingPostgresqlDatabase(_Reconnecting, pw.PostgresqlDatabase):
    """postgres:// and postgresql://"""


class ReconnectingPooledPostgresqlDatabase(_Reconnecting, PooledPostgresqlDatabase):
    """postgres+pool:// and postgresql+pool://"""


class ReconnectingSqliteDatabase(_Reconnecting, pw.SqliteDatabase):
    """sqlite://"""


class ReconnectingPooledSqliteDatabase(_Reconnecting, PooledSqliteDatabase):
    """sqlite+pool://"""


# playhouse.db_url picks the class by scheme: the bot's DATABASE_URL gets these.
register_database(ReconnectingPostgresqlDatabase, "postgres", "postgresql")
register_database(ReconnectingPooledPostgresqlDatabase, "postgres+pool", "postgresql+pool")
register_database(ReconnectingSqliteDatabase, "sqlite")
register_database(ReconnectingPooledSqliteDatabase, "sqlite+pool")


def open_database(url: str) -> pw.Database:
    """Connect the tables to DATABASE_URL, through the classes above, and create those missing."""
    return tables.open_database(url)


def is_postgres() -> bool:
    """Whether the store is PostgreSQL (else SQLite)."""
    return isinstance(db.obj, pw.PostgresqlDatabase)


def param() -> str:
    """The driver's placeholder: "?" for SQLite, "%s" for PostgreSQL."""
    return db.obj.param


# SQLite copies its write-ahead log into the database file (a checkpoint) inside the commit that grows the log
# past wal_autocheckpoint pages: by default 1,000 (4 MiB), every few batches, and the batch waits for it. The bot
# checkpoints every CHECKPOINT_S beside ingestion instead (as SQLite's documentation suggests for busy writers),
# and a commit checkpoints only what is left past WAL_PAGES: the log cannot grow without bound.
CHECKPOINT_S = 1.0
WAL_PAGES = 10_000


def checkpoint_in_background() -> bool:
    """SQLite: commits leave the checkpoints to `checkpoint`, to be called every CHECKPOINT_S beside
    ingestion; False (nothing to do) on PostgreSQL."""
    if is_postgres():
        return False
    db.pragma("wal_autocheckpoint", WAL_PAGES, permanent=True)
    return True


def checkpoint() -> None:
    """Copy what SQLite's write-ahead log holds into the database file, neither waiting for nor holding up
    readers and writers (PASSIVE). One that fails costs nothing: a commit checkpoints once the log is long."""
    try:
        db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")
    except pw.DatabaseError as exc:
        log.debug("SQLite checkpoint failed: %s", exc)


def reachable() -> bool:
    """Whether the last attempt to connect to the database worked: False during an outage that something
    (the poller, a command) ran into, True again once a connection works."""
    return getattr(db.obj, "reachable", True)

