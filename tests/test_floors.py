"""The house's floors: the database room imports neither the pipeline, the chat nor Telegram; the pipeline
imports neither the chat nor Telegram; the schema imports neither the bot nor ml. Read from every import in
the source, and checked once more on what importing a room really loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "bot/db": ("bot.pipeline", "bot.chat", "bot.app", "telegram"),
    "bot/pipeline": ("bot.chat", "bot.app", "telegram"),
    "schema": ("bot", "ml", "telegram"),
}


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


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_nothing_from_the_floors_above_it(room: str) -> None:
    files = sorted((ROOT / room).glob("*.py"))
    assert files, f"no room {room}"
    upward = [f"{path.relative_to(ROOT)} imports {name}" for path in files for name in sorted(imported(path))
              if any(below(name, up) for up in FORBIDDEN[room])]

    assert upward == []


def test_the_floor_test_sees_an_upward_import(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def f():\n    from telegram import Bot\n    from bot.chat import texts\n")

    assert {"telegram.Bot", "bot.chat.texts"} <= imported(wrong)


@pytest.mark.parametrize(("room", "modules"), [
    ("bot/db", "bot.db.connection, bot.db.held, bot.db.incidents, bot.db.ingest, bot.db.outbox, bot.db.retention, "
               "bot.db.routing, bot.db.samples, bot.db.tolerances"),
    ("bot/pipeline", "bot.pipeline.baselines, bot.pipeline.decide, bot.pipeline.forecast, bot.pipeline.incidents, "
                     "bot.pipeline.model, bot.pipeline.node_exporter, bot.pipeline.poller, bot.pipeline.remote_write, "
                     "bot.pipeline.remote_write_server, bot.pipeline.replay, bot.pipeline.sources, "
                     "bot.pipeline.tolerances, bot.pipeline.watch"),
    ("schema", "schema.domain, schema.tables"),
])
def test_importing_a_room_loads_nothing_from_above_it(room: str, modules: str) -> None:
    listed = {name.strip() for name in modules.split(",")}
    assert listed == {f"{room.replace('/', '.')}.{p.stem}" for p in (ROOT / room).glob("*.py") if p.stem != "__init__"}
    code = (f"import sys, {modules}; up = {FORBIDDEN[room]!r}; "
            "print(' '.join(m for m in sys.modules if any(m == u or m.startswith(u + '.') for u in up)))")

    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert run.stdout.split() == []
