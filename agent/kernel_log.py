"""The kernel log (/dev/kmsg), read as it is written: the lines that say which process the kernel killed for memory.

/dev/kmsg gives one record per read, never blocks when opened non-blocking, and a reader opened at its end sees
only what the kernel writes after that. Reading it needs CAP_SYSLOG where kernel.dmesg_restrict is 1 (Debian,
Ubuntu), and is open to every user where it is 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import weakref
from pathlib import Path

from agent.kernel import Unreadable, why

# Records read per sample at most: a kernel that logs faster than this (a firewall logging every packet) loses its
# oldest lines to the next sample, or to the ring buffer, rather than taking the agent's time.
MOST_RECORDS = 2000
# A record is at most 8 KiB (the kernel's CONSOLE_EXT_LOG_MAX); a smaller read of /dev/kmsg fails with EINVAL.
_READ_BYTES = 16 * 1024
# "Out of memory: Killed process 4121 (java) total-vm:…" and "Memory cgroup out of memory: Killed process …".
_KILLED_RE = re.compile(r"Killed process (\d+) \((.+?)\)(?= total-vm|,|$)")


class KernelLog:
    """The kernel's log lines written since the agent started, a sample's worth at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._why = ""
        self._partial = b""  # a line cut by the end of a read (of a plain file standing in for /dev/kmsg)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # tried once: who may read the kernel log does not change while the agent runs
            self._why = why(exc)
            return
        weakref.finalize(self, os.close, fd)
        with contextlib.suppress(OSError):  # a pipe cannot seek: all it holds is new
            os.lseek(fd, 0, os.SEEK_END)  # /dev/kmsg: from the next record on; a plain file: from its end
        self._fd = fd

    def new_lines(self) -> list[str]:
        """The messages the kernel logged since the last call (their text, without the record's header)."""
        if self._fd is None:
            raise Unreadable(self._why)
        chunks = []
        for _ in range(MOST_RECORDS):
            try:
                chunk = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:  # nothing more for now
                break
            except BrokenPipeError:  # the kernel overwrote records not read yet: the next read gives the oldest left
                continue
            except OSError as exc:
                raise Unreadable(why(exc)) from None
            if not chunk:  # the end of a plain file
                break
            chunks.append(chunk)
        data = self._partial + b"".join(chunks)
        complete, _, self._partial = data.rpartition(b"\n")
        # A record is "priority,sequence,microseconds,flags;text", followed by " KEY=value" lines of its context.
        return [line.partition(";")[2] if ";" in line else line
                for line in complete.decode("utf-8", "replace").splitlines() if line and not line.startswith(" ")]


def oom_victims(lines: list[str]) -> list[str]:
    """The processes the lines say the kernel killed for memory, as "java (pid 4121)"."""
    return [f"{match[2]} (pid {match[1]})" for line in lines if (match := _KILLED_RE.search(line))]
