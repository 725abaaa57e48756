"""The units systemd says failed, and how often it restarted each service, from `systemctl`.

Units change slowly and each question is a new process, so systemctl is asked at most every EVERY_S seconds;
the samples in between carry the failed units of the last answer again. A restart is counted in the sample that
follows the answer it was seen in, so no restart is counted twice.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from agent.kernel import Unreadable

EVERY_S = 30.0
TIMEOUT_S = 5.0
# systemctl's own environment: its output in plain C words, no pager, no colours. When the agent reads another
# root (a container watching its host), systemctl asks the systemd of that root over its D-Bus socket.
_ENVIRONMENT = {"LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


class Systemd:
    """Failed units and services' restarts of the systemd that runs the machine at `rootfs`."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self._systemctl = shutil.which("systemctl")
        self._environment = dict(_ENVIRONMENT)
        if rootfs != Path("/"):
            self._environment["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={rootfs / 'run/dbus/system_bus_socket'}"
        self._asked_at: float | None = None  # time.monotonic() of the last question
        self._failed: dict[str, float] = {}
        self._why: str | None = None  # why the last answer could not be had
        self._restarts: dict[str, int] | None = None  # NRestarts by service, of the last answer
        self._restarted: dict[str, float] | None = None  # restarts seen in the last answer, not sent yet

    def read(self) -> tuple[dict[str, float], dict[str, float] | None]:
        """The failed units (unit -> 1), and the restarts of services since the answer before (service -> count,
        only those that restarted), or None when this sample has no new answer to count them from. Raises
        Unreadable when systemd cannot be asked."""
        now = time.monotonic()
        if self._asked_at is None or now - self._asked_at >= EVERY_S:
            self._asked_at = now
            self.ask()
        if self._why is not None:
            raise Unreadable(self._why)
        restarted, self._restarted = self._restarted, None
        return self._failed, restarted

    def ask(self) -> None:
        """Ask systemctl now, and keep the answer (or why there is none) for the samples until the next question."""
        try:
            failed = self._failed_units()
            restarts = self._service_restarts()
        except Unreadable as exc:
            self._why, self._restarts, self._restarted = str(exc), None, None
            return
        self._why, self._failed = None, failed
        if self._restarts is not None:
            self._restarted = {unit: float(count - self._restarts[unit]) for unit, count in restarts.items()
                               if count > self._restarts.get(unit, count)}
        self._restarts = restarts

    def _failed_units(self) -> dict[str, float]:
        listed = self._systemctl_output("list-units", "--state=failed", "--plain", "--no-legend", "--full")
        return {line.split()[0]: 1.0 for line in listed.splitlines() if line.strip()}

    def _service_restarts(self) -> dict[str, int]:
        """NRestarts of every loaded service: how often systemd restarted it since it was loaded."""
        shown = self._systemctl_output("show", "--property=Id,NRestarts", "--", "*.service")
        restarts = {}
        for block in shown.split("\n\n"):
            properties = dict(line.partition("=")[::2] for line in block.splitlines())
            if properties.get("Id") and properties.get("NRestarts", "").isdigit():
                restarts[properties["Id"]] = int(properties["NRestarts"])
        return restarts

    def _systemctl_output(self, *args: str) -> str:
        if not (self.rootfs / "run/systemd/system").is_dir():  # sd_booted(): systemd is what started this machine
            raise Unreadable(f"systemd is not running this machine (no {self.rootfs / 'run/systemd/system'})")
        if self._systemctl is None:
            raise Unreadable("systemctl is not installed")
        try:
            done = subprocess.run([self._systemctl, "--no-pager", *args], capture_output=True, text=True,
                                  errors="replace", timeout=TIMEOUT_S, env=self._environment, check=False)
        except subprocess.TimeoutExpired:
            raise Unreadable(f"systemctl {args[0]} did not answer within {TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise Unreadable(f"systemctl could not be started: {exc.strerror or exc}") from None
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
            raise Unreadable(f"systemctl {args[0]} failed: {said}")
        return done.stdout
