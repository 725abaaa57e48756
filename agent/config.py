"""The agent's configuration: command line and environment, read and validated here only."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from agent.collect import FilesystemFilter, default_device_id
from agent.kernel import Roots
from agent.smart import EVERY_S as DEFAULT_SMART_INTERVAL
from agent.vocabulary import DEVICE_RE, ConfigError, command_name
from agent.wire import MAX_MOUNT_POINT

DEFAULT_TOPIC = "rigwatch.metrics"
DEFAULT_INTERVAL = 5.0
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_FS_TYPE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to run."""

    device: str
    interval: float
    once: bool
    bootstrap_servers: str | None  # None only with --once, which needs no Kafka
    topic: str
    filesystems: FilesystemFilter = field(default_factory=FilesystemFilter)
    roots: Roots = field(default_factory=Roots)  # where the machine's /proc, /sys and / are
    smart_interval: float = DEFAULT_SMART_INTERVAL  # seconds between two readings of the disks' SMART


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises instead of printing its usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _device(value: str) -> str:
    if not DEVICE_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a device id (1 to 64 characters of A-Z a-z 0-9 . _ -)")
    return value


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a number of seconds greater than 0")
    return seconds


def _fs_list(value: str, name: str) -> frozenset[str]:
    """A comma-separated list of filesystem types (`nfs`) and mount points (`/boot/efi`)."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    for entry in entries:
        if entry.startswith("/"):
            if len(entry) > MAX_MOUNT_POINT or not entry.isprintable():
                raise ConfigError(f"{name}: {entry[:80]!r} is not a mount point (at most {MAX_MOUNT_POINT} "
                                  "printable characters)")
        elif not _FS_TYPE_RE.fullmatch(entry):
            raise ConfigError(f"{name}: {entry[:80]!r} is neither a filesystem type (like nfs or fuse.sshfs) nor a "
                              "mount point (starting with /)")
    return frozenset(entry.rstrip("/") or "/" for entry in entries)


# Where the agent reads the machine's /proc, /sys and / (a container's view of its host, a test's tree): each
# option with its variable and its default.
_ROOTS = {"procfs": ("AGENT_PROCFS", "/proc"), "sysfs": ("AGENT_SYSFS", "/sys"), "rootfs": ("AGENT_ROOTFS", "/")}


def _root(value: str, name: str, default: str) -> Path:
    """A folder the agent reads the machine from, made absolute so that its log names where it looked."""
    if not value.isprintable() or not Path(value).is_dir():
        raise ConfigError(f"{name}: {value[:80]!r} is not a folder (where the machine's {default} is)")
    return Path(value).absolute()


def _parser() -> _Parser:
    parser = _Parser(prog=command_name("agent"), description="Sample this machine and publish its metrics to Kafka.")
    parser.add_argument(
        "--device", type=_device, default=None, help="device id sent with each sample (default: host name)"
    )
    parser.add_argument(
        "--interval", type=_interval, default=DEFAULT_INTERVAL, help="seconds between samples (default: 5)"
    )
    parser.add_argument("--once", action="store_true", help="print one sample as a JSON line and exit; needs no Kafka")
    parser.add_argument(
        "--fs-include", metavar="LIST", default=None,
        help="filesystem types or mount points to report although they are left out by default, comma-separated, "
             "e.g. tmpfs,/run/shm (default: AGENT_FS_INCLUDE, else none)",
    )
    parser.add_argument(
        "--fs-exclude", metavar="LIST", default=None,
        help="filesystem types or mount points (with all below them) not to report, comma-separated, e.g. "
             "nfs,/boot/efi (default: AGENT_FS_EXCLUDE, else none)",
    )
    parser.add_argument(
        "--smart-interval", metavar="SECONDS", type=_interval, default=None,
        help=f"seconds between two readings of the disks' SMART, sent again in the samples between (default: "
             f"AGENT_SMART_INTERVAL, else {DEFAULT_SMART_INTERVAL:g})",
    )
    for option, (variable, default) in _ROOTS.items():
        parser.add_argument(
            f"--{option}", metavar="DIR", default=None,
            help=f"read the machine's {default} from this folder: a container's view of its host, a test's tree "
                 f"(default: {variable}, else {default})",
        )
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """The configuration from the command line and the environment; raises ConfigError on a bad value."""
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    servers = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or None
    if servers is None and not args.once:
        raise ConfigError("KAFKA_BOOTSTRAP_SERVERS is not set (host:port of your Kafka brokers)")
    if servers is not None and not all(part.strip() for part in servers.split(",")):
        raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS={servers!r} is not a comma-separated list of host:port")
    topic = env.get("KAFKA_TOPIC", "").strip() or DEFAULT_TOPIC
    if not _TOPIC_RE.fullmatch(topic):
        raise ConfigError(f"KAFKA_TOPIC={topic[:80]!r} is not a topic name (1 to 249 characters of A-Z a-z 0-9 . _ -)")
    roots = {}
    for option, (variable, default) in _ROOTS.items():
        given = getattr(args, option)
        roots[option] = _root(given if given is not None else env.get(variable, "") or default,
                              f"--{option}" if given is not None else variable, default)
    include = args.fs_include if args.fs_include is not None else env.get("AGENT_FS_INCLUDE", "")
    exclude = args.fs_exclude if args.fs_exclude is not None else env.get("AGENT_FS_EXCLUDE", "")
    smart_interval = args.smart_interval
    if smart_interval is None:
        variable = env.get("AGENT_SMART_INTERVAL", "").strip()
        try:
            smart_interval = _interval(variable) if variable else DEFAULT_SMART_INTERVAL
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"AGENT_SMART_INTERVAL: {exc}") from None
    return AgentConfig(
        device=args.device or default_device_id(),
        interval=args.interval,
        once=args.once,
        bootstrap_servers=servers,
        topic=topic,
        filesystems=FilesystemFilter(
            include=_fs_list(include, "--fs-include" if args.fs_include is not None else "AGENT_FS_INCLUDE"),
            exclude=_fs_list(exclude, "--fs-exclude" if args.fs_exclude is not None else "AGENT_FS_EXCLUDE"),
        ),
        roots=Roots(**roots),
        smart_interval=smart_interval,
    )


def load_config(argv: Sequence[str] | None = None) -> AgentConfig:
    """The configuration, or exit with status 2 and one line saying which value is wrong."""
    try:
        return parse_config(argv)
    except ConfigError as exc:
        sys.stderr.write(f"rigwatch agent: {exc}\n")
        raise SystemExit(2) from None
