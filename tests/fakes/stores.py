"""PostgreSQL stores for the tests: the session's database emptied, and a store as a version from before partitioned
samples made it."""

from __future__ import annotations

from bot import db
from schema.tables import TABLES, KeptSample, connect


def empty_postgres(url: str) -> None:
    """Nothing left in the database at `url`: every table with its partitions and sequences, and whatever a test
    made besides (a migration's tables and trigger)."""
    database = connect(url)
    database.execute_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    database.close()


def older_version_store(url: str) -> None:
    """Plain `metric` and `metric_5m` tables with integer ids, labels and incidents holding foreign keys to `metric`:
    what a version from before partitioned samples made. Made in the (empty) database at `url`, then opened as
    this version does on an upgrade."""
    database = connect(url)
    db.db.initialize(database)
    database.create_tables([table for table in TABLES if table is not KeptSample])
    for table in ("metric", "metric_5m"):
        database.execute_sql(f"ALTER TABLE {table} ALTER COLUMN id TYPE integer")
        database.execute_sql(f"ALTER SEQUENCE {table}_id_seq AS integer")
    database.execute_sql("ALTER TABLE label ALTER COLUMN metric_id TYPE integer, "
                         "ADD FOREIGN KEY (metric_id) REFERENCES metric (id) ON DELETE CASCADE")
    database.execute_sql("ALTER TABLE incident ALTER COLUMN sample_id TYPE integer, "
                         "ADD FOREIGN KEY (sample_id) REFERENCES metric (id) ON DELETE SET NULL")
    database.close()
    db.open_database(url).close()
