"""The documentation keeps up with the code: every environment variable the code reads is in
docs/configuration.md, and every relative link of README.md and docs/*.md leads to a file and a heading that
exist."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project reads the environment in these modules only (test_only_the_config_modules_read_the_environment).
CONFIG_MODULES = ("bot/config.py", "ml/config.py", "agent/config.py")
PACKAGES = ("agent", "bot", "ml", "schema")
CONFIGURATION = ROOT / "docs" / "configuration.md"

# A string that names an environment variable: upper case, words joined by underscores (TELEGRAM_BOT_TOKEN).
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# A one-word upper-case name counts too where it is looked up: env.get("CI"), os.getenv("HOME"), env["HOME"].
LOOKED_UP = re.compile(r"[A-Z][A-Z0-9_]*")
LOOKUPS = {"get", "getenv", "pop", "setdefault"}
ENV_READERS = {"environ", "environb", "getenv", "getenvb"}


# --- environment variables -------------------------------------------------------------------------------------

def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings or other bare string statements."""
    return {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def _in_fstrings(tree: ast.AST) -> set[int]:
    """ids of the string pieces of f-strings: message text, not names looked up."""
    return {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}


def _looked_up(tree: ast.AST) -> set[int]:
    """ids of the string constants used as a key: the first argument of .get()/getenv()/…, or a subscript."""
    keys: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in LOOKUPS:
                keys.add(id(node.args[0]))
        elif isinstance(node, ast.Subscript):
            keys.add(id(node.slice))
    return keys


def env_variables(path: Path) -> set[str]:
    """The environment variables a config module names: every string constant spelt like one (NAME_WITH_PARTS),
    and any upper-case string looked up as a key; docstrings and f-string text left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = _docstrings(tree) | _in_fstrings(tree)
    keys = _looked_up(tree)
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skipped:
            continue
        if ENV_NAME.fullmatch(node.value) or (id(node) in keys and LOOKED_UP.fullmatch(node.value)):
            found.add(node.value)
    return found


def environment_readers(path: Path) -> list[str]:
    """Where a module reads the environment itself: os.environ, os.getenv (under any alias of os), or either
    imported from os; as 'file:line what'."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    os_names = {"os"} | {alias.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
                         for alias in node.names if alias.name == "os" and alias.asname}
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in ENV_READERS and isinstance(node.value, ast.Name)
                and node.value.id in os_names):
            found.append(f"{path}:{node.lineno} {node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{path}:{node.lineno} from os import {alias.name}" for alias in node.names
                      if alias.name in ENV_READERS]
    return found


def documented(names: set[str], text: str) -> set[str]:
    """The names that appear in `text` as whole names (KAFKA_TOPIC is not found inside KAFKA_TOPIC_X)."""
    return {name for name in names if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text)}


def test_every_environment_variable_the_code_reads_is_in_the_configuration_page() -> None:
    read: dict[str, set[str]] = {}
    for module in CONFIG_MODULES:
        path = ROOT / module
        assert path.is_file(), f"{module} is gone: update CONFIG_MODULES in {Path(__file__).name}"
        read[module] = env_variables(path)
        assert read[module], f"no environment variable found in {module}: is the scan still right?"
    text = CONFIGURATION.read_text(encoding="utf-8")

    missing = {module: sorted(names - documented(names, text)) for module, names in read.items()}
    missing = {module: names for module, names in missing.items() if names}

    assert not missing, "environment variables missing from docs/configuration.md: " + "; ".join(
        f"{module} reads {', '.join(names)}" for module, names in missing.items())


def test_only_the_config_modules_read_the_environment() -> None:
    config = {ROOT / module for module in CONFIG_MODULES}
    readers = [found for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
               if path not in config for found in environment_readers(path)]

    assert not readers, ("the environment is read outside " + ", ".join(CONFIG_MODULES) + ", where "
                         "test_docs.py does not look for variables to document: " + "; ".join(readers))


def test_the_environment_scan_finds_a_variable_in_a_module(tmp_path: Path) -> None:
    module = tmp_path / "config.py"
    module.write_text(
        '"""Reads SOME_DOCSTRING_NAME, which is no variable."""\n'
        "import os\n"
        "import os as system\n"
        "from os import getenv\n"
        "env = os.environ\n"
        'token = env.get("MY_TOKEN", "")\n'
        'home = system.environ["HOME"]\n'
        '_number(env, "BATCH_LIMIT", 5)\n'
        'message = f"BAD_VALUE_TEXT {token}"\n'
        'LEVELS = ("DEBUG", "INFO")\n',
        encoding="utf-8",
    )

    assert env_variables(module) == {"MY_TOKEN", "HOME", "BATCH_LIMIT"}
    assert [line.split(" ", 1)[1] for line in environment_readers(module)] == [
        "from os import getenv", "os.environ", "system.environ"]
    assert documented({"MY_TOKEN", "BATCH_LIMIT", "HOME"}, "`MY_TOKEN` and BATCH_LIMIT_X") == {"MY_TOKEN"}


# --- links -----------------------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
INLINE_CODE = re.compile(r"(`+).*?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
EXTERNAL = re.compile(r"[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, …


def _outside_code(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match and (fence is None or match[1] == fence):
            fence = match[1] if fence is None else None
            continue
        if fence is None:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text (a link's text, no markup), lower case, every character that is not
    a letter, a digit, `_`, `-` or a space dropped (punctuation, emoji), spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(char for char in text if char.isalnum() or char in "_- ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated heading gets -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    previous = ""
    for _number, line in _outside_code(path.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        setext = SETEXT.match(line) if previous.strip() and not HEADING.match(previous) else None
        title = heading[2] if heading else previous.strip() if setext and "|" not in previous else None
        previous = line
        if title is None:
            continue
        base = slug(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link and image of a Markdown file outside code."""
    for number, line in _outside_code(path.read_text(encoding="utf-8")):
        bare = INLINE_CODE.sub("", line)
        for match in LINK.finditer(bare):
            yield number, match[1]
        if reference := REFERENCE.match(bare):
            yield number, reference[1]


def broken_links(path: Path) -> list[str]:
    """The relative links of a Markdown file that lead nowhere: a missing file, or an anchor that is no heading
    of its file. External links (http:, https:, mailto:, …) are not fetched."""
    broken = []
    for number, target in links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.name}:{number} ({target})"
        if not destination.exists():
            broken.append(f"{where}: no file {file_part}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{where}: no heading #{anchor} in {destination.name}")
    return broken


def documentation() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_of_the_readme_and_the_docs_leads_somewhere() -> None:
    pages = documentation()
    assert len(pages) > 1, "no docs/*.md found"

    broken = [problem for page in pages for problem in broken_links(page)]

    assert not broken, "broken links: " + "; ".join(broken)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Tolerances: what a ❌ teaches one machine\n\n"
                                       "## Again\n\n## Again\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n"
        "[good](other.md#tolerances-what-a--teaches-one-machine), [twice](other.md#again-1), [top](#a-page),\n"
        "[web](https://example.org/nowhere.md#x), `[code](nowhere.md)`\n\n"
        "```\n[in a fence](gone.md)\n```\n\n"
        "[no file](missing.md) and [no heading](other.md#not-there) and [no anchor here](#nope)\n",
        encoding="utf-8",
    )

    assert broken_links(page) == [
        "page.md:10 (missing.md): no file missing.md",
        "page.md:10 (other.md#not-there): no heading #not-there in other.md",
        "page.md:10 (#nope): no heading #nope in page.md",
    ]


def test_headings_become_anchors_as_on_github() -> None:
    assert slug("Tolerances: what a ❌ teaches one machine") == "tolerances-what-a--teaches-one-machine"
    assert slug("`/retrain` on 1,000,000 stored samples: `python -m bench.retrain_1m`") == (
        "retrain-on-1000000-stored-samples-python--m-benchretrain_1m")
    assert slug("Already running Prometheus?") == "already-running-prometheus"
    assert slug("The [agent](fleets.md) as a service") == "the-agent-as-a-service"


# --- the remote-write filter ------------------------------------------------------------------------------------

def test_the_relabel_filter_of_the_fleet_page_keeps_every_series_the_receiver_reads() -> None:
    """docs/fleets.md offers a `write_relabel_configs` regex that sends only what Rigwatch reads: it must keep every
    series the receiver reads, or a machine that uses it silently loses metrics and readings."""
    from bot.intake.node_exporter import READERS

    [regex] = re.findall(r"^\s+regex: (node_\S+)$", (ROOT / "docs" / "fleets.md").read_text(encoding="utf-8"), re.M)
    kept = re.compile(regex)  # Prometheus anchors a relabel regex at both ends, as fullmatch does

    assert sorted(name for name in READERS if not kept.fullmatch(name)) == []
    assert not kept.fullmatch("node_netstat_Tcp_InSegs") and not kept.fullmatch("node_md_state")
