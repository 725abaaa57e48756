"""A big store made fast: N machines and M samples written by the database itself (PostgreSQL: one INSERT … SELECT
over generate_series, the indexes built after; SQLite: a recursive CTE), for the restart test and bench/restart.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import peewee as pw

from bot import db

STEP_S = 15.0  # one sample per machine every 15 s
# The metrics of a filled sample: a quiet machine whose disk, memory and swap the forecasts follow.
FILLED = {
    "cpu_percent": "20 + (k % 7)",
    "load_1m": "0.3",
    "mem_percent": "40 + (d % 40) + (k % 5) * 0.1",
    "swap_percent": "5 + (d % 3)",
    "disk_percent": "30 + (d % 50) + (k % 4) * 0.1",
}


def machine(d: int) -> str:
    """The name of the d-th machine."""
    return f"m{d:05}"


def fill(url: str, machines: int, samples: int, end: float) -> float:
    """A store of `machines` machines with `samples` samples between them, one every STEP_S up to `end`, made
    inside the database (no Python per row), with each machine's row as the bot keeps it; the seconds it took."""
    started = time.monotonic()
    database = db.open_database(url)
    per = samples // machines
    columns = ", ".join(FILLED)
    postgres = isinstance(database, pw.PostgresqlDatabase)
    name = "'m' || lpad(d::text, 5, '0')" if postgres else "printf('m%05d', d)"
    select = (f"SELECT {name}, {end} - {STEP_S} * k, {end} - {STEP_S} * k + 0.2, 0.05, 1, "
              f"{', '.join(FILLED.values())} FROM machines, steps ORDER BY d, k DESC")
    try:
        if postgres:
            _fill_postgres(database, machines, per, columns, select)
        else:
            with database.atomic():
                database.execute_sql(
                    f"WITH RECURSIVE machines(d) AS (SELECT 0 UNION ALL SELECT d + 1 FROM machines WHERE d < "
                    f"{machines - 1}), steps(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM steps WHERE k < {per - 1}) "
                    f"INSERT INTO metric (device, ts, received, p_stressed, model_version, {columns}) {select}")
        with database.atomic():
            database.execute_sql(
                'INSERT INTO device (name, last_ts, last_received, last_metric, last_p, "interval") '
                f"SELECT device, MAX(ts), MAX(received), MAX(id), 0.05, {STEP_S} FROM metric GROUP BY device")
    finally:
        database.close()
    return time.monotonic() - started


def _fill_postgres(database: pw.Database, machines: int, per: int, columns: str, select: str) -> None:
    """PostgreSQL builds an index faster once than row by row: the metric table's are dropped and made again."""
    indexes = database.execute_sql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'metric' AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = 'metric'::regclass)").fetchall()
    with database.atomic():
        database.execute_sql("SET LOCAL synchronous_commit = off")
        for index, _definition in indexes:
            database.execute_sql(f'DROP INDEX "{index}"')
        database.execute_sql((  # psycopg2 reads % as a placeholder, even with no parameters
            f"WITH machines(d) AS (SELECT generate_series(0, {machines - 1})), "
            f"steps(k) AS (SELECT generate_series(0, {per - 1})) "
            f"INSERT INTO metric (device, ts, received, p_stressed, model_version, {columns}) {select}"
        ).replace("%", "%%"))
    database.execute_sql("SET maintenance_work_mem = '512MB'")
    for _index, definition in indexes:  # a partitioned table's reads "ON ONLY metric": made on no partition
        database.execute_sql(definition.replace(" ON ONLY ", " ON "))
    database.execute_sql("ANALYZE")


def new_samples(machines: int, ts: float) -> Iterator[tuple[bytes, bytes]]:
    """One new sample of every machine at about `ts` (machine d at ts + d % 10), as Kafka messages of the agent."""
    for d in range(machines):
        name = machine(d)
        yield name.encode(), orjson.dumps({"v": 1, "device": name, "ts": ts + d % 10, "metrics": {
            "cpu_percent": 21.0, "load_1m": 0.3, "mem_percent": 40.0 + d % 40, "swap_percent": 5.0 + d % 3,
            "disk_percent": 30.0 + d % 50}})
