"""Reading a big result in chunks: a million ORM objects would cost seconds and gigabytes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import peewee as pw

from schema.tables import db

FETCH_CHUNK = 10_000  # rows turned into an array at a time: bounds the memory of Python tuples


@contextlib.contextmanager
def streamed(sql: str, params: tuple | list = ()) -> Iterator[object]:
    """A cursor over the rows of `sql`, to read with fetchmany. On PostgreSQL a server-side one: the driver
    would otherwise hold the whole result set in memory next to what is made from it."""
    database = db.obj
    if not isinstance(database, pw.PostgresqlDatabase):
        yield database.execute_sql(sql, params)
        return
    with database.atomic():
        # psycopg2 names a cursor only WITH HOLD while peewee keeps autocommit on; read whole inside the
        # transaction, it streams and is never materialised.
        cursor = database.connection().cursor(name=f"rigwatch_{uuid.uuid4().hex}", withhold=True)
        try:
            cursor.execute(sql, params)
            yield cursor
        finally:
            cursor.close()
