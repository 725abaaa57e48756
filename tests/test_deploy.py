"""Installing Rigwatch: the package and its commands, the agent alone on a small machine, the systemd units."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from agent.wire import parse

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = ("rigwatch-agent.service", "rigwatch-bot.service")
# Where the units expect the virtual environment that `pip install` filled.
INSTALL_PREFIX = Path("/opt/rigwatch")
# What a checkout holds besides the source; a build must not depend on any of it.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".benchmarks", "build", "*.egg-info", "data",
    "models",
)


def pins(path: Path) -> list[str]:
    """The requirement lines of a requirements file."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rigwatch built from a copy of the checkout and installed, without its dependencies, into a folder."""
    source = tmp_path_factory.mktemp("source") / "rigwatch"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    target = tmp_path_factory.mktemp("installed")
    # The dependencies are already in this environment; building offline needs no isolation.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, source],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return target


def run_installed(installed: Path, command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one of the installed commands with only the installed copy of Rigwatch importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TELEGRAM_", "PYTHON"))}
    return subprocess.run(
        [installed / "bin" / command, *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_the_package_holds_agent_bot_and_ml_and_both_commands(installed: Path) -> None:
    assert {"agent", "bot", "ml"} <= {p.name for p in installed.iterdir()}
    assert not {"tests", "bench", "deploy"} & {p.name for p in installed.iterdir()}
    entry_points = configparser.ConfigParser()
    entry_points.read(next(installed.glob("rigwatch-*.dist-info")) / "entry_points.txt")
    assert dict(entry_points["console_scripts"]) == {
        "rigwatch-bot": "bot.__main__:main",
        "rigwatch-agent": "agent.__main__:main",
    }


@pytest.mark.slow
def test_the_package_requires_exactly_the_pins_of_requirements_txt(installed: Path) -> None:
    metadata = (next(installed.glob("rigwatch-*.dist-info")) / "METADATA").read_text()
    required = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert required == pins(ROOT / "requirements.txt")


def test_the_agent_pins_the_same_versions_as_the_whole_project() -> None:
    agent_pins = pins(ROOT / "agent" / "requirements.txt")
    assert sorted(p.split("==")[0] for p in agent_pins) == ["confluent-kafka", "psutil"]
    assert set(agent_pins) <= set(pins(ROOT / "requirements.txt"))


@pytest.mark.slow
def test_rigwatch_agent_prints_a_sample(installed: Path, tmp_path: Path) -> None:
    done = run_installed(installed, "rigwatch-agent", "--once", "--device", "pi-garage", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert parse(done.stdout.strip().encode()).device == "pi-garage"


@pytest.mark.slow
def test_rigwatch_bot_starts_the_bot_which_asks_for_its_token(installed: Path, tmp_path: Path) -> None:
    done = run_installed(installed, "rigwatch-bot", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["rigwatch: TELEGRAM_BOT_TOKEN is not set; get one from @BotFather"]


@pytest.fixture(scope="module")
def psutil_only_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment whose only library is psutil, like a Raspberry Pi that has not installed Kafka."""
    venv = tmp_path_factory.mktemp("psutil-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.strip()
    # The same psutil this environment has, linked in rather than downloaded: tests run offline.
    Path(purelib, "psutil").symlink_to(Path(psutil.__file__).parent, target_is_directory=True)
    return python


@pytest.fixture
def agent_folder_alone(tmp_path: Path) -> Path:
    """A folder holding a copy of agent/ and nothing else of Rigwatch."""
    shutil.copytree(ROOT / "agent", tmp_path / "agent", ignore=NOT_SOURCE)
    return tmp_path


@pytest.mark.slow
def test_the_agent_folder_alone_prints_a_sample_with_only_psutil_installed(
    psutil_only_python: Path, agent_folder_alone: Path
) -> None:
    done = subprocess.run(
        [psutil_only_python, "-m", "agent", "--once"],
        cwd=agent_folder_alone, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    sample = parse(done.stdout.strip().encode())
    assert {"cpu_percent", "mem_percent"} <= set(sample.metrics)


@pytest.mark.slow
def test_without_confluent_kafka_the_agent_says_how_to_publish(
    psutil_only_python: Path, agent_folder_alone: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    done = subprocess.run(
        [psutil_only_python, "-m", "agent"],
        cwd=agent_folder_alone, env={**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == "rigwatch agent: publishing to Kafka needs confluent-kafka (pip install confluent-kafka)"
    assert "Traceback" not in done.stderr


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(DEPLOY / name)
    return parser


@pytest.mark.parametrize("name", UNITS)
def test_each_unit_restarts_on_failure_as_its_own_user_on_a_read_only_system(name: str) -> None:
    service = unit(name)["Service"]
    assert service["Restart"] == "on-failure"
    assert service["DynamicUser"] == "yes"
    assert service["ProtectSystem"] == "strict"
    # The agent may read /home, never write it: it reports how full /home is when it is a filesystem of its own.
    assert service["ProtectHome"] == ("read-only" if name == "rigwatch-agent.service" else "yes")
    assert service["PrivateTmp"] == "yes"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ExecStart"].split()[0] == str(INSTALL_PREFIX / "bin" / name.removesuffix(".service"))
    assert service["EnvironmentFile"].startswith("/etc/rigwatch/")
    assert unit(name)["Install"]["WantedBy"] == "multi-user.target"


def test_the_bot_unit_writes_only_its_state_folder_and_keeps_the_token_out_of_the_unit() -> None:
    service = unit("rigwatch-bot.service")["Service"]
    assert service["StateDirectory"] == "rigwatch"
    assert service["WorkingDirectory"] == "%S/rigwatch"
    assert "ReadWritePaths" not in service
    assert "TELEGRAM_BOT_TOKEN" not in service.get("Environment", "")
    assert "TELEGRAM_BOT_TOKEN" not in "".join(
        line for line in (DEPLOY / "rigwatch-bot.service").read_text().splitlines() if not line.startswith("#")
    )


def system_unit_dir() -> Path:
    for folder in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (folder / "sysinit.target").exists():
            return folder
    raise AssertionError("systemd's own units are not installed: apt-get install -y systemd")


@pytest.fixture
def system_root(installed: Path, tmp_path: Path) -> Path:
    """A filesystem root with systemd's units, ours, and the installed commands where the units expect them."""
    if shutil.which("systemd-analyze") is None:
        raise AssertionError("systemd-analyze is not installed: apt-get install -y systemd (CI does)")
    root = tmp_path / "root"
    shutil.copytree(system_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    for name in UNITS:
        shutil.copy(DEPLOY / name, root / "usr/lib/systemd/system" / name)
    shutil.copytree(installed / "bin", root / INSTALL_PREFIX.relative_to("/") / "bin")
    return root


def verify(root: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *names],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.slow
def test_systemd_accepts_both_units_without_a_warning(system_root: Path) -> None:
    done = verify(system_root, *UNITS)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.slow
def test_systemd_analyze_would_catch_a_mistake_in_a_unit(system_root: Path) -> None:
    units = system_root / "usr/lib/systemd/system"
    text = (units / "rigwatch-bot.service").read_text()
    (units / "rigwatch-typo.service").write_text(text.replace("ProtectSystem=strict", "ProtectSystem=strikt"))
    shutil.rmtree(system_root / "opt")
    typo, missing = verify(system_root, "rigwatch-typo.service"), verify(system_root, "rigwatch-bot.service")
    assert "strikt" in typo.stderr
    assert missing.returncode != 0
    assert "/opt/rigwatch/bin/rigwatch-bot" in missing.stderr


def documented_drop_in(holding: str) -> str:
    """The drop-in of docs/fleets.md (an ini block) that holds `holding`."""
    blocks = re.findall(r"```ini\n(.*?)```", (ROOT / "docs" / "fleets.md").read_text(), re.DOTALL)
    return next(block for block in blocks if holding in block)


@pytest.mark.slow
def test_the_unit_opens_no_disk_and_the_documented_smart_drop_in_is_one_systemd_accepts(system_root: Path) -> None:
    service = unit("rigwatch-agent.service")["Service"]
    smart = documented_drop_in("CAP_SYS_RAWIO")
    drop_ins = system_root / "etc/systemd/system/rigwatch-agent.service.d"
    drop_ins.mkdir(parents=True)
    (drop_ins / "smart.conf").write_text(smart)
    (drop_ins / "kernel-log.conf").write_text(documented_drop_in("CAP_SYSLOG"))
    with_both = verify(system_root, "rigwatch-agent.service")
    (drop_ins / "smart.conf").write_text(smart.replace("SupplementaryGroups", "SupplementaryGroupz"))
    typo = verify(system_root, "rigwatch-agent.service")

    # By default the agent may neither open a disk nor send it a command: SMART is opt-in.
    assert (service["PrivateDevices"], service["CapabilityBoundingSet"]) == ("yes", "")
    assert "SupplementaryGroups" not in service and "AmbientCapabilities" not in service
    drop_in = configparser.ConfigParser(interpolation=None)
    drop_in.optionxform = str  # type: ignore[assignment,method-assign]
    drop_in.read_string(smart)
    assert dict(drop_in["Service"]) == {
        "PrivateDevices": "no", "SupplementaryGroups": "disk", "AmbientCapabilities": "CAP_SYS_RAWIO CAP_SYS_ADMIN",
        "CapabilityBoundingSet": "CAP_SYS_RAWIO CAP_SYS_ADMIN"}
    assert (with_both.returncode, with_both.stderr) == (0, "")
    assert "SupplementaryGroupz" in typo.stderr, "systemd-analyze reads the drop-ins"
