"""The README's examples work as written.

Every ```python block of README.md runs on its own in a fresh interpreter (cwd: an empty temporary folder,
``MPLBACKEND=Agg``, ``NEUROSPEC_DATA`` = the data root of the suite), and every ``neurospec ...`` command
line of the README (```bash lines and inline code) names existing subcommands and options.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    index: int  # 1-based, in README order
    heading: str  # the section heading above the block
    line: int  # line of the opening fence
    code: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.heading).strip("-")
        return f"readme-{self.index}-{slug}"


def _read_readme() -> tuple[list[Block], list[str]]:
    """The ```python blocks, and the ``neurospec`` command lines (```bash lines and inline code spans)."""
    blocks: list[Block] = []
    commands: list[str] = []
    heading, fence, start, body = "", None, 0, []
    for lineno, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            if line.startswith("```"):
                fence, start, body = line[3:].strip(), lineno, []
            else:
                if line.startswith("#"):
                    heading = line.lstrip("#").strip()
                commands += re.findall(r"`(neurospec [^`]+)`", line)
        elif line.startswith("```"):
            if fence == "python":
                blocks.append(Block(len(blocks) + 1, heading, start, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
            if fence == "bash" and line.startswith("neurospec "):
                commands.append(line)
    return blocks, list(dict.fromkeys(commands))


BLOCKS, COMMANDS = _read_readme()


def test_readme_has_examples() -> None:
    assert BLOCKS, "no ```python block found in README.md"
    assert COMMANDS, "no `neurospec ...` command found in README.md"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_parses(block: Block) -> None:
    ast.parse(block.code, filename=f"README.md, block {block.index} (line {block.line})")
    assert "../shared" not in block.code, "find data through probe.core.paths.data_root(), not relative paths"


@pytest.mark.integration
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, tmp_path: Path, data_root: Path) -> None:
    script = tmp_path / f"readme_block_{block.index}.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg", "NEUROSPEC_DATA": str(data_root)}
    where = f"README.md block {block.index} ({block.heading!r}, line {block.line})"
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""
        pytest.fail(f"{where} ran over {BLOCK_TIMEOUT_S} s\n--- stderr (end) ---\n{stderr[-4000:]}")
    assert proc.returncode == 0, (f"{where} exited with {proc.returncode}\n--- stderr (end) ---\n"
                                  f"{proc.stderr[-8000:]}\n--- stdout (end) ---\n{proc.stdout[-2000:]}")


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    from probe.cli import build_parser

    return build_parser()


def _argv(command: str) -> list[str]:
    return shlex.split(command, comments=True)[1:]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_subcommand_help(command: str, parser: argparse.ArgumentParser,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``neurospec <subcommand> [<subcommand>] --help`` exits 0 (the parser of ``python -m probe.cli``)."""
    words = list(itertools.takewhile(lambda w: re.fullmatch(r"[a-z][a-z0-9-]*", w), _argv(command)))[:2]
    assert words, f"no subcommand in {command!r}"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*words, "--help"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_parses(command: str, parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole line parses: every option it uses exists (nothing runs)."""
    try:
        parser.parse_args(_argv(command))
    except SystemExit as err:
        pytest.fail(f"{command!r}: exit {err.code}\n{capsys.readouterr().err}")


def test_module_entry_point() -> None:
    """``python -m probe.cli``, the command behind ``neurospec``, starts and lists the command groups."""
    proc = subprocess.run([sys.executable, "-m", "probe.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert _argv(command)[0] in proc.stdout
