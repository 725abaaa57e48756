"""The tables, bound to one proxy that `open_database` points at DATABASE_URL (peewee; SQLite or PostgreSQL)."""

from __future__ import annotations

import time
from datetime import tzinfo
from enum import StrEnum
from pathlib import Path

import peewee as pw
from playhouse.db_url import connect as connect_url
from playhouse.migrate import SchemaMigrator, migrate

from agent.vocabulary import KNOWN_METRICS
from schema import partitions
from schema.domain import IncidentDetail, Kind, NoticeKind, State, Window
from schema.schedule import Schedule

db = pw.DatabaseProxy()


class EnumField(pw.CharField):
    """A StrEnum stored as its text and read back as the enum."""

    def __init__(self, enum: type[StrEnum], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.enum = enum

    def python_value(self, value: str | None) -> StrEnum | None:
        return None if value is None else self.enum(value)


class DetailField(pw.TextField):
    """An incident's IncidentDetail, stored as its JSON."""

    def db_value(self, value: IncidentDetail | str | None) -> str | None:
        return value.to_json() if isinstance(value, IncidentDetail) else value

    def python_value(self, value: str | None) -> IncidentDetail:
        return IncidentDetail.from_json(value)


class BaseModel(pw.Model):
    class Meta:
        database = db


class Metric(BaseModel):
    """One sample of one device; unique on (device, ts) so a redelivered message changes nothing. On PostgreSQL
    the table is partitioned by day on `ts` (schema/partitions.py), so its primary key is (id, ts)."""

    id = pw.BigAutoField()  # 57.6 million samples a day (10,000 machines every 15 s) pass 2**31 within weeks
    device = pw.CharField(max_length=64)
    ts = pw.DoubleField()
    received = pw.DoubleField()
    extra = pw.TextField(null=True)  # JSON of metric names the model does not know
    p_stressed = pw.DoubleField(null=True)
    model_version = pw.IntegerField(null=True)
    filesystems = pw.TextField(null=True)  # JSON {mount point: percent used}; disk_percent is the fullest
    processes = pw.TextField(null=True)  # JSON {"cpu"/"memory": [[name, pid, percent], …]}, the top of each
    readings = pw.TextField(null=True)  # JSON {"readings": …, "notes": …, "unreadable": …} (agent/wire.py)

    class Meta:
        indexes = ((("device", "ts"), True),)


# One nullable column per known metric: a missing metric is NULL, never 0.
for _name in KNOWN_METRICS:
    Metric._meta.add_field(_name, pw.DoubleField(null=True))


class Verdict(BaseModel):
    """What a person said, who and when: the columns `Label` and `ForecastLabel` share (no table of its own)."""

    value = pw.SmallIntegerField()
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()


class Label(Verdict):
    """A person's verdict on a sample: 1 = stressed, 0 = normal. The latest label of a sample wins."""

    # The sample's id: in `metric`, or in `metric_kept` once its day is dropped. Not a database foreign key: one to a
    # table partitioned by day would need the day in the key too (schema/partitions.py says why).
    metric = pw.BigIntegerField(column_name="metric_id", index=True)
    # True when this ❌ became its machine's tolerance: what holds for that machine alone, which the global model
    # must not learn as normal. NULL on ✅ and on labels stored before tolerances existed.
    tolerance = pw.BooleanField(null=True)


class Device(BaseModel):
    """One row per device that ever reported: its newest sample and usual interval (for /status and silence)."""

    name = pw.CharField(max_length=64, unique=True)
    last_ts = pw.DoubleField()  # sample time of the newest sample
    last_received = pw.DoubleField()  # when the bot last stored one: a silence is measured on the bot's clock
    last_metric = pw.BigIntegerField(null=True)  # id of the newest sample
    last_p = pw.DoubleField(null=True)
    interval = pw.DoubleField(null=True)  # the usual seconds between samples


class Incident(BaseModel):
    """A stressed stretch, a silence or a forecast of one device: opened once, updated, resolved.

    `revision` grows with every change, so the newest state wins over any stale message edit.
    """

    device = pw.CharField(max_length=64, index=True)
    kind = EnumField(Kind, max_length=16)
    metric = pw.CharField(max_length=32, default="")  # a forecast's metric; "" for the others
    state = EnumField(State, max_length=16, index=True)
    opened_ts = pw.DoubleField()  # sample time it started
    last_ts = pw.DoubleField()
    resolved_ts = pw.DoubleField(null=True)
    sample_id = pw.BigIntegerField(null=True)  # the sample a label on it is about, as Label.metric (no foreign key)
    last_p = pw.DoubleField(null=True)
    peak_p = pw.DoubleField(null=True)
    below = pw.IntegerField(default=0)  # consecutive samples under threshold - hysteresis
    detail = DetailField(default=IncidentDetail)
    acked_by = pw.CharField(max_length=200, null=True)
    acked_at = pw.DoubleField(null=True)
    snoozed_until = pw.DoubleField(null=True)
    acted = pw.DoubleField(null=True)  # when a person last pressed one of its buttons
    next_reminder = pw.DoubleField(null=True)
    revision = pw.IntegerField(default=1)
    created = pw.DoubleField()
    updated = pw.DoubleField()


# One open incident per device and kind (and metric), however many processes decide: a second one fails
# its batch's transaction, which is read again and then finds the first.
Incident.add_index(Incident.device, Incident.kind, Incident.metric, unique=True, where=(Incident.state == State.OPEN))


class Group(BaseModel):
    """One message for many state changes of one kind in one chat and topic (an outage, a storm): sent when the
    ALERT_GROUP_MIN-th change joins, edited while more join within ALERT_GROUP_SECONDS of the last one. Its
    members are the `Notice` rows that point at it."""

    chat_id = pw.BigIntegerField()
    thread_id = pw.BigIntegerField(null=True)
    change = pw.CharField(max_length=16)
    created = pw.DoubleField()
    last_join = pw.DoubleField(index=True)
    due = pw.DoubleField()
    attempts = pw.IntegerField(default=0)
    sent = pw.DoubleField(null=True)
    failed = pw.TextField(null=True)
    message_id = pw.BigIntegerField(null=True)
    shown_members = pw.IntegerField(default=0)  # how many members its message names
    shown_revision = pw.IntegerField(default=0)  # the sum of its members' incident revisions it shows
    edited = pw.DoubleField(null=True)
    claimed_until = pw.DoubleField(null=True)

    class Meta:
        table_name = "digest"  # its name before the daily digest: the table keeps it


class Notice(BaseModel):
    """The outbox: one message to one chat about an incident, written in the transaction that decided it.

    An ALERT is the incident's own message, rendered from its newest state and edited while it lasts; a REPLY
    (recovered, reminder) is a short reply to it with a fixed text. A row exists before its
    message is sent, so its buttons are valid from the first moment.
    """

    incident = pw.ForeignKeyField(Incident, on_delete="CASCADE", index=True)
    chat_id = pw.BigIntegerField()
    kind = EnumField(NoticeKind, max_length=8)
    text = pw.TextField(null=True)
    created = pw.DoubleField(index=True)
    due = pw.DoubleField(index=True)  # next try
    attempts = pw.IntegerField(default=0)
    sent = pw.DoubleField(null=True)
    failed = pw.TextField(null=True)  # why it can never be delivered (bot blocked, chat gone)
    message_id = pw.BigIntegerField(null=True)
    shown_revision = pw.IntegerField(default=0)  # the incident revision the message shows
    edited = pw.DoubleField(null=True)
    claimed_until = pw.DoubleField(null=True)  # a sender working on it: others keep off until then
    thread_id = pw.BigIntegerField(null=True)  # the forum topic it goes to; None: the chat's general topic
    change = pw.CharField(max_length=16, null=True)  # what it announces, for grouping: a Kind or a Reply
    # The group it is part of (its column keeps its name from before the daily digest).
    group = pw.ForeignKeyField(Group, null=True, on_delete="SET NULL", index=True, column_name="digest_id",
                               object_id_name="group_id")
    expanded = pw.BooleanField(default=False)  # part of a group, and sent on its own too because someone asked
    escalated = pw.BooleanField(default=False)  # sent by an escalation step, not by the chats' subscriptions


class Event(BaseModel):
    """Something that happened to an incident, for its history and its report: opened, a message sent or edited,
    a button pressed, a reminder, an escalation step, resolved. Written where it happens, never edited."""

    incident = pw.ForeignKeyField(Incident, on_delete="CASCADE", index=True)
    at = pw.DoubleField()
    what = pw.CharField(max_length=16)  # opened, sent, edited, grouped, pressed, reminded, escalated, resolved
    text = pw.TextField(default="")  # in words: "@bob pressed ✅ Correct", "sent to chat -100123"
    chat_id = pw.BigIntegerField(null=True)

    class Meta:
        table_name = "incident_event"


class Mute(BaseModel):
    """Maintenance: devices matching `pattern` are stored and predicted, but no incident opens while it holds.

    A one-off mute holds until `until`; a recurring window (`until` None) holds on the `days` (bit 0 Monday)
    from minute `start` to minute `end` of the day in the bot's time zone (past midnight when end < start).
    """

    pattern = pw.CharField(max_length=64)
    until = pw.DoubleField(null=True)
    days = pw.SmallIntegerField(default=0)
    start = pw.SmallIntegerField(default=0)
    end = pw.SmallIntegerField(default=0)
    reason = pw.CharField(max_length=200)
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()

    def holds(self, t: float, tz: tzinfo) -> bool:
        """Whether it mutes at time `t`."""
        if self.until is not None:
            return self.until > t
        return Window(self.days, self.start, self.end).holds(t, tz)

    class Meta:
        # Not "mute": that table held one device per row. open_database copies its rows here.
        table_name = "maintenance"


class Subscription(BaseModel):
    """A chat's forum topic (or its general topic, `thread_id` 0) gets the messages about devices matching
    `pattern`; a chat with no subscription at all gets every message in its general topic."""

    chat_id = pw.BigIntegerField()
    thread_id = pw.BigIntegerField(default=0)
    pattern = pw.CharField(max_length=64)
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()

    class Meta:
        indexes = ((("chat_id", "thread_id", "pattern"), True),)


class Person(BaseModel):
    """Someone who wrote in an allowed chat (a command, a button), so they can be put on call by name; a row with
    `chat_id` their own user id: they started the bot in private, so it can message them directly."""

    chat_id = pw.BigIntegerField()
    user_id = pw.BigIntegerField()
    username = pw.CharField(max_length=64, null=True, index=True)  # lower case, without the @
    name = pw.CharField(max_length=200)
    seen = pw.DoubleField()

    class Meta:
        indexes = ((("chat_id", "user_id"), True),)


class OnCall(BaseModel):
    """A chat's on-call shift: a person, in a recurring window (bit 0 Monday, minutes of the day in the bot's time
    zone) or, with `other`, whenever no one else's window holds."""

    chat_id = pw.BigIntegerField(index=True)
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    days = pw.IntegerField(default=0)
    start = pw.IntegerField(default=0)
    end = pw.IntegerField(default=0)
    other = pw.BooleanField(default=False)
    set_by = pw.CharField(max_length=200)
    created = pw.DoubleField()


class Chain(BaseModel):
    """A chat's (or forum topic's, `thread_id` 0 for the general one) escalation: its steps as JSON."""

    chat_id = pw.BigIntegerField()
    thread_id = pw.BigIntegerField(default=0)
    steps = pw.TextField()
    set_by = pw.CharField(max_length=200)
    created = pw.DoubleField()

    class Meta:
        table_name = "escalation_chain"
        indexes = ((("chat_id", "thread_id"), True),)


class Escalation(BaseModel):
    """A step of a chat's chain taken for an incident: its row makes it once only, whichever process and however
    many restarts. `skipped`: it fell while the machine was muted, or one later was due at once."""

    incident = pw.ForeignKeyField(Incident, on_delete="CASCADE")
    chat_id = pw.BigIntegerField()
    thread_id = pw.BigIntegerField(default=0)
    step = pw.IntegerField()
    at = pw.DoubleField()
    skipped = pw.BooleanField(default=False)

    class Meta:
        indexes = ((("incident", "chat_id", "thread_id", "step"), True),)


class Dependency(BaseModel):
    """The machines matching `pattern` stand behind `parent` (set with /depends; DEPENDENCIES adds more)."""

    pattern = pw.CharField(max_length=64, unique=True)
    parent = pw.CharField(max_length=64)
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()


class Digest(BaseModel):
    """A chat's forum topic (or its general topic, `thread_id` 0) gets a digest daily or weekly (`weekday` None or
    0 Monday) at minute `minute` of the day in the bot's time zone. `last_due` is the due moment of the newest
    period sent (or given up on): a period is claimed before it is sent, so it goes out once whichever process
    or restart sends it. `covered_until` is where the last digest sent ended: the next one starts there."""

    chat_id = pw.BigIntegerField()
    thread_id = pw.BigIntegerField(default=0)
    weekday = pw.SmallIntegerField(null=True)
    minute = pw.SmallIntegerField()
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()
    last_due = pw.DoubleField(null=True)
    covered_until = pw.DoubleField(null=True)
    sent = pw.DoubleField(null=True)  # when the last one went out
    failed = pw.TextField(null=True)  # why the last period could not be delivered (the chat is gone)
    claimed_until = pw.DoubleField(null=True)  # a process sending it: others keep off until then

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.weekday, self.minute)

    class Meta:
        table_name = "digest_schedule"  # "digest" is the group messages' table, from before they were called so
        indexes = ((("chat_id", "thread_id"), True),)


class Heartbeat(BaseModel):
    """When the bot's intake last received (`at`), and since when it has without a gap (`since`): while it
    receives nothing at all, no machine is silent; when it receives again, machines get their grace."""

    name = pw.CharField(max_length=32, unique=True)
    since = pw.DoubleField()
    at = pw.DoubleField()


class HeldPart(BaseModel):
    """Part of a remote-write scrape that waits for the rest of its series (Prometheus may split a scrape over
    several writes, and a load balancer the writes over several bot processes), kept before the write is answered
    so a restart loses nothing and another process finds it: `part` is its values, JSON [[key, ...], value] pairs.
    Deleted once the scrape is stored."""

    device = pw.CharField(max_length=64)
    ts_ms = pw.BigIntegerField()
    part = pw.TextField()
    at = pw.DoubleField()  # when it came

    class Meta:
        table_name = "held_part"
        indexes = ((("device", "ts_ms"), False),)


class RemoteScrape(BaseModel):
    """A remote-write scrape some bot process received: the row every process locks before it keeps, merges or
    stores the scrape's parts (HeldPart), so that of two processes with parts of one scrape exactly one stores it,
    with every part. `series` is set in the transaction that stores its sample: how many series it had, which is
    what a whole scrape of its device has (0: smartctl_exporter's own scrape, which says nothing of that). Kept a
    few minutes after (bot/intake/remote_write.py), so that a part coming late is known as such."""

    device = pw.CharField(max_length=64)
    ts_ms = pw.BigIntegerField()
    at = pw.DoubleField()  # when it first came
    series = pw.IntegerField(null=True)  # NULL while it waits for the rest

    class Meta:
        table_name = "remote_scrape"
        indexes = ((("device", "ts_ms"), True),)


class Rejected(BaseModel):
    """A message that did not follow the wire format, kept with the reason for an operator."""

    received = pw.DoubleField()
    source = pw.CharField(max_length=300)  # topic[partition]@offset
    # SHA-256 of the source, the Kafka timestamp and the whole payload: a redelivery adds nothing, while a
    # new message at a reused offset (the topic was recreated) is recorded too.
    fingerprint = pw.CharField(max_length=64, unique=True)
    reason = pw.TextField()
    size = pw.IntegerField()
    payload = pw.TextField()  # the first bytes only: enough to recognise the sender

    class Meta:
        # Not "rejected": that table, unique on source alone, has no fingerprint; a new table is created
        # next to it instead of failing every insert into it.
        table_name = "rejected_message"


class ForecastLabel(Verdict):
    """A person's verdict on a forecast or a condition: 1 = it was right, 0 = it was wrong (or expected). Apart
    from `Label`: the classifier never trains on these."""

    incident = pw.ForeignKeyField(Incident, on_delete="CASCADE", index=True)


class Tolerance(BaseModel):
    """What a ❌ taught one machine: `metric` up to `value` is normal on `device` (below the metric's hard ceiling,
    ml/features.py). Raised by a later ❌, removed by Undo or /tolerance reset; never by a retrain."""

    device = pw.CharField(max_length=64)
    metric = pw.CharField(max_length=300)  # a model metric, or a filesystem's "disk:<mount point>"
    value = pw.DoubleField()
    incident = pw.ForeignKeyField(Incident, null=True, on_delete="SET NULL")  # the ❌'d incident that set it
    label = pw.ForeignKeyField(Label, null=True, on_delete="SET NULL")  # the label that press stored
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()
    updated = pw.DoubleField()  # when it was set or last raised: a change any process can see cheaply

    class Meta:
        indexes = ((("device", "metric"), True),)


class ForecastHold(BaseModel):
    """A "❌ Wrong forecast" on `device`'s `metric` (a forecast's metric, "disk:<mount point>" for a filesystem):
    no forecast of it alerts until the metric is back in its usual range, which removes the hold."""

    device = pw.CharField(max_length=64)
    metric = pw.CharField(max_length=300)
    incident = pw.ForeignKeyField(Incident, null=True, on_delete="SET NULL")
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()

    class Meta:
        table_name = "forecast_hold"


class Expected(BaseModel):
    """A ❌ on a condition (schema/conditions.py): on `device`, the condition of one object (`metric`, its
    incident's "cond:<name>:<object>") is expected, and opens no incident until someone undoes it."""

    device = pw.CharField(max_length=64)
    metric = pw.CharField(max_length=300)
    incident = pw.ForeignKeyField(Incident, null=True, on_delete="SET NULL")
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()

    class Meta:
        table_name = "condition_expected"
        indexes = ((("device", "metric"), True),)


class TrendState(BaseModel):
    """What the forecasts learnt of one machine (bot/pipeline/forecast.py): each trended metric's last intervals,
    its open one and when it fell back (its daily cycle). Written as it is learnt, at most every few minutes a
    machine, and read back at start instead of the machine's history; the samples from `ts` on are not in it."""

    device = pw.CharField(max_length=64, primary_key=True)
    ts = pw.DoubleField()  # the state holds the machine's samples before this sample time
    saved = pw.DoubleField()
    state = pw.TextField()  # JSON, `Forecaster.state_of`

    class Meta:
        table_name = "trend_state"


class UsualRange(BaseModel):
    """One machine's usual range of one metric (bot/pipeline/baselines.py), as last worked out from its history:
    a restart reads it back instead of the history, until it is an hour old."""

    device = pw.CharField(max_length=64)
    metric = pw.CharField(max_length=300)  # a model metric, or a filesystem's "disk:<mount point>"
    low = pw.DoubleField()
    high = pw.DoubleField()
    computed = pw.DoubleField()  # when it was worked out (Unix seconds)

    class Meta:
        table_name = "usual_range"
        primary_key = pw.CompositeKey("device", "metric")


class DiskDay(BaseModel):
    """One disk's SMART readings on one day (the newest of the day), by serial, and the disk model's verdict on
    them: what the disk model reads day by day (ml/disks/), and what /disks and /status list."""

    device = pw.CharField(max_length=64)
    disk = pw.CharField(max_length=64)  # its name on the machine, "sdb"
    serial = pw.CharField(max_length=100)
    model = pw.CharField(max_length=100, null=True)
    day = pw.CharField(max_length=10)  # YYYY-MM-DD, UTC
    ts = pw.DoubleField()  # of the sample read
    values = pw.TextField()  # JSON {"smart_5_raw": 0, ...}, as Backblaze names them
    p = pw.DoubleField(null=True)  # P(it fails within 30 days), by the disk model
    alert = pw.BooleanField(default=False)
    explanation = pw.TextField(default="")  # what drove P

    class Meta:
        table_name = "disk_day"
        indexes = ((("serial", "day"), True), (("device", "ts"), False))


class DiskLabel(Verdict):
    """A person's verdict on a disk: 1 = it was failing (✅ replaced), 0 = it was fine (❌ wrong). The disk model
    learns from them on /retrain disk."""

    serial = pw.CharField(max_length=100, index=True)
    device = pw.CharField(max_length=64)

    class Meta:
        table_name = "disk_label"


class Aggregate(BaseModel):
    """Five minutes of one device's samples older than RETENTION_DAYS (see bot/db/retention.py): per metric the
    minimum (`<name>_min`), the mean (`<name>`, the same column name as a raw sample's) and the maximum. On
    PostgreSQL partitioned by day on `bucket`, like the samples."""

    id = pw.BigAutoField()
    device = pw.CharField(max_length=64)
    bucket = pw.DoubleField()  # start of the five minutes, Unix seconds
    samples = pw.IntegerField()  # how many raw samples it stands for
    p_stressed = pw.DoubleField(null=True)  # the highest of them

    class Meta:
        table_name = "metric_5m"
        indexes = ((("device", "bucket"), True),)


for _name in KNOWN_METRICS:
    Aggregate._meta.add_field(f"{_name}_min", pw.DoubleField(null=True))
    Aggregate._meta.add_field(_name, pw.DoubleField(null=True))
    Aggregate._meta.add_field(f"{_name}_max", pw.DoubleField(null=True))


class KeptSample(Metric):
    """A raw sample kept past RETENTION_DAYS because something points at it (a label, an incident, its device's
    newest): on PostgreSQL, copied here with its id before its day's partition is dropped, and never dropped. Its
    id is the one it had in `metric`, from the same sequence, so a reference stays valid. Empty on SQLite, whose
    retention keeps such samples in `metric`."""

    id = pw.BigIntegerField(primary_key=True)

    class Meta:
        table_name = "metric_kept"
        indexes = ((("device", "ts"), False),)


TABLES = [Metric, KeptSample, Label, Rejected, Device, Incident, Group, Notice, Mute, ForecastLabel, Aggregate,
          Subscription, Heartbeat, Tolerance, ForecastHold, HeldPart, Expected, DiskDay, DiskLabel, Event, Person,
          OnCall, Chain, Escalation, Dependency, Digest, RemoteScrape, TrendState, UsualRange]


# On PostgreSQL the samples and their aggregates are partitioned by day (schema/partitions.py).
SAMPLES = partitions.Spec(Metric, "ts")
AGGREGATES = partitions.Spec(Aggregate, "bucket")


def connect(url: str) -> pw.Database:
    """A connection to DATABASE_URL; SQLite's folder is created and a busy writer is waited out."""
    if url.startswith("sqlite"):
        path = url.split("://", 1)[1][1:]  # sqlite:///rel/path and sqlite:////abs/path
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets readers read while the poller writes; busy_timeout waits out a writer. Every transaction
        # takes the write lock when it begins (IMMEDIATE): one that read first and wrote later would fail at
        # once with "database is locked" when another connection wrote in between, busy_timeout or not.
        # Incremental auto-vacuum (it only takes on a new file) lets retention give freed pages back.
        return connect_url(url, returning_clause=True, lock_type="IMMEDIATE", pragmas={
            "auto_vacuum": "incremental", "journal_mode": "wal", "busy_timeout": 10000,
        })
    return connect_url(url)


def open_database(url: str) -> pw.Database:
    """Point the tables at DATABASE_URL, create those missing and add the columns a newer version added. On
    PostgreSQL a new store's samples and aggregates are partitioned by day, and the next days' partitions made."""
    database = connect(url)
    db.initialize(database)
    if not isinstance(database, pw.PostgresqlDatabase):
        _create_tables(database)
        return database
    with partitions.locked(database):  # processes that start together make each table once
        partitions.create_missing(database, (SAMPLES, AGGREGATES))
        _create_tables(database)
    partitions.ensure_ahead(database, SAMPLES, time.time())
    return database


def _create_tables(database: pw.Database) -> None:
    database.create_tables(TABLES, safe=True)
    add_missing_columns(database)
    _widen_columns(database)
    _adopt_old_mutes(database)


def _widen_columns(database: pw.Database) -> None:
    """Text columns a newer version made longer (a tolerance's metric may name a filesystem now). SQLite does not
    hold text to its declared length; PostgreSQL does, so its column is widened in place, once."""
    if not isinstance(database, pw.PostgresqlDatabase):
        return
    for table, field in ((Tolerance, Tolerance.metric),):
        name, column = table._meta.table_name, field.column_name
        length = database.execute_sql(
            "SELECT character_maximum_length FROM information_schema.columns WHERE table_name = %s "
            "AND column_name = %s AND table_schema = current_schema()", (name, column)).fetchone()
        if length and length[0] is not None and length[0] < field.max_length:
            database.execute_sql(f'ALTER TABLE "{name}" ALTER COLUMN "{column}" TYPE VARCHAR({field.max_length})')


def _adopt_old_mutes(database: pw.Database) -> None:
    """The one-device mutes of an older version become maintenance rows (its device is a pattern that matches
    itself alone), once: the old table is dropped after."""
    if not database.table_exists("mute"):
        return
    with database.atomic():
        database.execute_sql("INSERT INTO maintenance (pattern, until, days, start, \"end\", reason, user_id, "
                             "user_name, created) SELECT device, until, 0, 0, 0, reason, user_id, user_name, created "
                             "FROM mute")
        database.execute_sql("DROP TABLE mute")


def add_missing_columns(database: pw.Database) -> None:
    """A table made by an older version gets the nullable (or defaulted) columns added since, so an upgrade
    keeps its data: a new column must be nullable or have a default."""
    migrator = SchemaMigrator.from_database(database)
    for table in TABLES:
        name = table._meta.table_name
        have = {column.name for column in database.get_columns(name)}
        missing = [f for f in table._meta.sorted_fields if f.column_name not in have]
        if missing:
            with database.atomic():
                migrate(*(migrator.add_column(name, f.column_name, f) for f in missing))
