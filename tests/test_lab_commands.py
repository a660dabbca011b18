"""Every lab command recorded in docs/ and the README parses against the lab's one entry
(`python -m lab`, lab/cli.py) as written: an option renamed or a command moved makes this fail,
instead of leaving the pages with commands that no longer run. The pages (every docs/**/*.md and
the README), docs/perf/regenerate.sh, and the `command` each device run's JSON under docs/perf/ records
(the command that wrote it). Parsing only, nothing is run."""
from __future__ import annotations

import json
import re
import shlex

import pytest

from conftest import REPO
from lab.cli import parser

PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
RECORDS = sorted((REPO / "docs" / "perf").rglob("*.json"))  # the lab's device runs (docs/results/ holds sweeps' pages)
SCRIPT = REPO / "docs" / "perf" / "regenerate.sh"
ENTRY = "python -m lab"


def page_commands(text: str) -> list[str]:
    """`python -m lab ...` in backticks, and lines of code blocks that start with it (trailing
    `# comment` off, `\\` continuations joined)."""
    inline = re.findall(rf"`({re.escape(ENTRY)}\b[^`]*)`", text)
    joined = text.replace("\\\n", " ")
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", joined, re.S | re.M)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return inline + [line for line in lines if line.startswith(ENTRY + " ")]


def script_commands(text: str) -> list[str]:
    """The script's `python -m lab` lines, continuations joined and its variables expanded."""
    text = text.replace("\\\n", " ")
    variables = dict(re.findall(r'^\[.*\] && (\w+)="([^"]*)"$', text, re.M))
    commands = [line[line.index(ENTRY):] for line in text.splitlines() if ENTRY in line and not line.startswith("#")]
    return [re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], c) for c in commands]


def json_commands(value) -> list[str]:
    """Every string under a `command` key of a JSON record, at any depth (a run's parts keep their own)."""
    if isinstance(value, dict):
        return [c for key, v in value.items() for c in ([v] if key == "command" and isinstance(v, str) else json_commands(v))]
    if isinstance(value, list):
        return [c for v in value for c in json_commands(v)]
    return []


def record_commands() -> list[tuple[str, str]]:
    return [(str(path.relative_to(REPO / "docs")), c) for path in RECORDS
            for c in dict.fromkeys(json_commands(json.loads(path.read_text())))]


def recorded_commands() -> list[tuple[str, str]]:
    found = [(page.name, c) for page in PAGES for c in page_commands(page.read_text())]
    return found + [(SCRIPT.name, c) for c in script_commands(SCRIPT.read_text())] + record_commands()


COMMANDS = recorded_commands()


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_a_recorded_lab_command_parses(where, command):
    assert command.startswith(ENTRY + " "), f"{where}: `{command[:80]}` does not start with `{ENTRY}`"
    argv = shlex.split(command)[len(ENTRY.split()):]
    try:
        parser().parse_args(argv)
    except SystemExit as err:  # --help exits 0 once it has printed
        if err.code == 0:
            return
        pytest.fail(f"{where}: `{command}` does not parse against `python -m lab` (exit {err.code})")


def test_the_commands_are_found_and_none_names_the_old_entry():
    """Every page that runs the lab is read (so the test above cannot pass on nothing)."""
    where = {w for w, _ in COMMANDS}
    assert {"performance.md", "performance-memory.md", "README.md", "regenerate.sh"} <= where, where
    assert len(script_commands(SCRIPT.read_text())) == 3
    # every device run's JSON under docs/perf/ records the command that wrote it
    assert RECORDS and all(json_commands(json.loads(path.read_text())) for path in RECORDS), RECORDS
    for page in [*PAGES, SCRIPT, *RECORDS]:
        assert "python -m bench.perf" not in page.read_text(), f"{page}: the lab's old entry"
