"""A real second filesystem for the tests: an ext4 image on a loop device, filled to a known percent."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def run(*command: str | Path) -> None:
    subprocess.run([str(part) for part in command], check=True, timeout=60, capture_output=True)


def _used_percent(mount: Path) -> float:
    """Percent used as df (and psutil) show it: used / (used + available to users)."""
    stat = os.statvfs(mount)
    used, avail = (stat.f_blocks - stat.f_bfree) * stat.f_frsize, stat.f_bavail * stat.f_frsize
    return 100.0 * used / (used + avail)


@contextlib.contextmanager
def loop_filesystem(folder: Path, percent: float, size_mib: int = 64,
                    inodes: int | None = None) -> Iterator[tuple[str, float]]:
    """An ext4 image mounted on a loop device under `folder` and filled to about `percent`, with room for about
    `inodes` files when given (mkfs.ext4 -N); its mount point and its percent used as statvfs gives it. Needs root,
    as CI runs the tests (mount -o loop)."""
    if os.geteuid() != 0:  # a developer's own account may skip it; in CI a missing root is an error, not a gap
        reason = "mounting a loop device needs root; CI runs the tests as root"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    image, mount = folder / "data.img", folder / "data"
    mount.mkdir()
    run("truncate", "-s", f"{size_mib}M", image)
    # No blocks reserved for root: percent used is plain used / size.
    run("mkfs.ext4", "-q", "-m", "0", *(("-N", str(inodes)) if inodes else ()), image)
    run("mount", "-o", "loop", image, mount)
    try:
        stat = os.statvfs(mount)
        size = (stat.f_blocks - stat.f_bfree + stat.f_bavail) * stat.f_frsize
        fill = max(0, int(percent / 100 * size) - (stat.f_blocks - stat.f_bfree) * stat.f_frsize)
        with open(mount / "fill", "wb") as out:
            chunk = b"\xa5" * (1 << 20)
            for _ in range(fill >> 20):
                out.write(chunk)
            out.write(chunk[: fill & ((1 << 20) - 1)])
            out.flush()
            os.fsync(out.fileno())
        yield str(mount), _used_percent(mount)
    finally:
        run("umount", "-l", mount)
