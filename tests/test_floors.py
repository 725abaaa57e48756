"""The house's floors: every room imports only the rooms below it. The agent stands alone; the schema and ml never
import the bot; in the bot the database room is below the intake, the intake below the pipeline, the pipeline below
the chat, and the chat below the composition root. Read from every import in the source, and checked once more on
what importing a room really loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every room, from the ground up, and what it must never import: only the rooms above it may import it.
FORBIDDEN = {
    "agent": ("bot", "ml", "schema", "telegram"),
    "schema": ("bot", "ml", "telegram"),
    "ml": ("bot", "telegram"),
    "bot/db": ("bot.intake", "bot.pipeline", "bot.chat", "bot.app", "bot.replay", "ml", "telegram"),
    "bot/intake": ("bot.pipeline", "bot.chat", "bot.app", "bot.replay", "telegram"),
    "bot/pipeline": ("bot.chat", "bot.app", "bot.replay", "telegram"),
    "bot/chat": ("bot.app", "bot.replay"),
}


def sources(room: str) -> list[Path]:
    """The room's Python files, in its sub-folders too."""
    return sorted((ROOT / room).rglob("*.py"))


def module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imported(path: Path) -> set[str]:
    """Every module an `import` or `from … import` in the file names, wherever it stands in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            names.update([node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)])
    return names


def below(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_every_room_of_the_house_has_its_floor() -> None:
    rooms = {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("*/__init__.py")} | {
        p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("bot/*/__init__.py")}

    assert rooms - {"bot", "bench", "tests"} == set(FORBIDDEN)


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_nothing_from_the_floors_above_it(room: str) -> None:
    files = sources(room)
    assert files, f"no room {room}"
    upward = [f"{path.relative_to(ROOT)} imports {name}" for path in files for name in sorted(imported(path))
              if any(below(name, up) for up in FORBIDDEN[room])]

    assert upward == []


def test_the_floor_test_sees_an_upward_import(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def f():\n    from telegram import Bot\n    from bot.chat import texts\n")

    assert {"telegram.Bot", "bot.chat.texts"} <= imported(wrong)


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_importing_a_room_loads_nothing_from_above_it(room: str) -> None:
    modules = ", ".join(module(path) for path in sources(room))
    code = (f"import sys, {modules}; up = {FORBIDDEN[room]!r}; "
            "print(' '.join(m for m in sys.modules if any(m == u or m.startswith(u + '.') for u in up)))")

    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert run.stdout.split() == []
