"""No text of the repository cites documents users cannot read.

The project grew from a design guide that is not in the repository, and its notes once
lived in a ``DESIGN.md`` that is not there either; the design notes are now
``docs/design.md``. So no README, page, docstring, help text or test may cite
``DESIGN.md``, or speak of "the seed" meaning that guide ("the seed's market-data
example", "the seed document", "the seed's section 8"). "The seed" meaning the random
seed of a run stays, so the patterns below name the guide's uses only.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GUIDE = [
    r"DESIGN\.md",
    r"\bseed document",
    r"\bseed (section|pattern|table)\b",
    r"\bthe seed's (section|pattern|table|demo|broker|requester|heartbeat|benchmark|threshold)\b",
    r"\bthe seed's (trading|market[- ]data|risk|exchange|pre-trade|example|one-frame|REQ/REP)\b",
    r"\bthe seed's (\"|``?|:class:|[A-Z][a-z]+[A-Z])",  # a quotation or a class name
    r"\bthe seed's\)",
    r"\bthe seed's and the Guide's\b",
    r"\b(systems|examples?|components|presets) from the seed\b",
    r"\bthe seed uses\b",
]
PATTERN = re.compile("|".join(f"(?:{p})" for p in GUIDE))
SELF = Path(__file__).resolve()


def text_files() -> list[Path]:
    """The repository's files (git's list; outside a checkout, the tree without hidden
    or ignored directories), text only, at most 4 MiB each."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.splitlines()
        paths = [ROOT / name for name in listed]
    except (OSError, subprocess.SubprocessError):
        skip = {"site", "build", "dist", "__pycache__"}
        paths = [
            p
            for p in ROOT.rglob("*")
            if not any(part.startswith(".") or part in skip for part in p.relative_to(ROOT).parts)
        ]
    files = []
    for path in paths:
        if path.resolve() == SELF or not path.is_file() or path.stat().st_size > 4 << 20:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        files.append(path)
    assert len(files) > 100, "the repository's files were not found"
    return files


def offenders(text: str) -> list[str]:
    """The guide-sense phrases in ``text`` (line breaks and indentation as spaces)."""
    flat = " ".join(text.split())
    found: dict[tuple[int, int], str] = {}
    for anchor in re.finditer(r"seed|DESIGN", flat):  # search only near these: fast
        start = max(0, anchor.start() - 40)
        window = flat[start : anchor.end() + 200]
        for match in PATTERN.finditer(window):
            found[(start + match.start(), start + match.end())] = match.group(0)
    return [found[span] for span in sorted(found)]


def test_no_text_cites_design_md_or_the_guide_as_the_seed() -> None:
    found = []
    for path in text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{path.relative_to(ROOT)}: {hit}" for hit in offenders(text)]
    assert found == []


@pytest.mark.parametrize(
    "text",
    [
        "as DESIGN.md section 4 words it",
        "with presets from the seed document",
        "the seed's market-data and risk examples",
        "Run the seed's trading examples (market data PUB/SUB)",
        "(the seed's REQ/REP risk check)",
        "the seed's ``ThreadSafeSocket``",
        "through the seed's ReliableRiskClient",
        "the seed's ConflatingSubscriber",
        'the seed\'s "optimized configuration for HFT"',
        "an ordinary SUB stream (the seed's).",
        "(5 s, the seed's ``rcvtimeo``)",
        "From the seed's section 8",
        "End-to-end example systems from the seed, written once",
        "the seed uses 0.1",
        "Attempts per order (the seed's and the Guide's 3).",
        "zerocopy (seed section 6)",
    ],
)
def test_the_patterns_catch_what_was_there(text: str) -> None:
    assert offenders(text), text


@pytest.mark.parametrize(
    "text",
    [
        "the same seed always replays the same run",
        "a pure function of the seed.",
        "the seed's process, interpreter start included",
        "each failing seed's replay command",
        "the fault schedule the seed ran with",
        "the seed, schedule and faults of a shrunk.json",
        "that seed's fault schedule",
        "Randomness comes from the seed, through separate generators",
        "the executor, not the seed, failed",
        "(the seed's fault schedule)",
        "replays it (the seed's trace hash, its schedule)",
    ],
)
def test_the_random_seed_is_left_alone(text: str) -> None:
    assert offenders(text) == [], text
