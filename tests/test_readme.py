"""The README's facts, checked against the code: set-up commands, CI, test count, slow tests,
command-line options, configs and files it names."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gtcrn.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ENHANCE_COMMAND = ("pip install torch==2.13.0 && pip install -e . && gtcrn enhance examples/noisy.wav "
                   "-o clean.wav")
TEST_COMMAND = "pip install torch==2.13.0 && pip install -e '.[dev]' && python -m pytest"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|yaml|python)?\n(.*?)```", text, re.DOTALL)


def test_the_two_setup_commands_and_ci_run_the_same():
    blocks = [b.strip() for b in code_blocks(README)]
    assert ENHANCE_COMMAND in blocks and TEST_COMMAND in blocks
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST_COMMAND in ci  # CI runs exactly the README's test command
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/clean.wav" in ignored or "clean.wav" in ignored  # the first command's output


def test_the_readme_says_how_to_get_the_cpu_build_elsewhere():
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert f"pip install torch==2.13.0 {CPU_INDEX}" in setup
    assert "CUDA" in setup


def _collect(*args: str) -> list[str]:
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return [line for line in run.stdout.splitlines() if "::" in line]


def test_the_stated_test_count_is_the_collected_count():
    stated = re.search(r"`python -m pytest` runs the default suite \((\d[\d,]*) tests", README)
    assert stated, "the README states how many tests the default suite has"
    assert int(stated.group(1).replace(",", "")) == len(_collect())


def test_the_slow_tests_are_what_the_readme_says():
    sentence = re.search(r"`python -m pytest -m slow` runs the slow tests, (.*?)\. ", README, re.DOTALL)
    assert sentence
    slow = _collect("-m", "slow")
    assert slow and all("dnsmos" in node.lower() for node in slow)
    assert "DNSMOS" in sentence.group(1)
    named = set(re.findall(r"`(tests/\w+\.py)`", sentence.group(1)))
    assert named == {node.split("::")[0] for node in slow}


def _options(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: {s for a in sub._actions for s in a.option_strings} for name, sub in commands.items()}


def readme_commands() -> list[list[str]]:
    """Every `gtcrn COMMAND ...` in the README's code blocks and inline code, as argument lists."""
    found = []
    texts = [b.replace("\\\n", " ") for b in code_blocks(README)] + re.findall(r"`([^`\n]+)`", README)
    for text in texts:
        for line in text.splitlines():
            for match in re.finditer(r"(?:^|&& |\$\( ?)gtcrn (\w+)([^#&|>]*)", line):
                try:
                    args = shlex.split(match.group(2))
                except ValueError:
                    args = match.group(2).split()
                found.append([match.group(1), *args])
    return found


def test_every_option_the_readme_shows_exists():
    options = _options(build_parser())
    commands = readme_commands()
    assert len(commands) > 20 and {c[0] for c in commands} >= {"enhance", "train", "evaluate", "export",
                                                              "benchmark", "prepare", "info"}
    for command in commands:
        assert command[0] in options, command
        for arg in command[1:]:
            arg = arg.strip("[]")  # `gtcrn benchmark --train [--batch N]`
            if arg.startswith("--"):
                assert arg.split("=")[0] in options[command[0]], (command, arg)


NAMED = r"(?<![\w/.])((?:configs|scripts|docs|examples)/[\w./-]+\.(?:yaml|py|md|wav))"
NAMED_FILES = sorted(set(re.findall(NAMED, README)))


@pytest.mark.parametrize("path", NAMED_FILES)
def test_files_the_readme_names_exist(path):
    assert (ROOT / path).is_file()


def test_the_upstream_release_is_linked_where_its_checkpoints_are_used():
    enhancing = README.split("## Enhancing files", 1)[1].split("\n## ", 1)[0]
    assert "upstream:" in enhancing and "(https://github.com/Xiaobin-Rong/gtcrn)" in enhancing
