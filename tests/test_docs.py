"""The documents and code comments report what the code is and does today: no figure or constant is dated by
the stretch of work that produced it (history is git's), and BENCHMARKS.md stays a short report."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["BENCHMARKS.md", "README.md", "encoders/checkpoints/README.md"]
CODE_DIRS = ["data", "encoders", "index", "recsys", "app", "benchmarks"]
# the pattern is assembled from parts so that this file does not itself read as dated wording
_S, _R = "sess" + "ion", "the re" + "view"
HISTORY = re.compile(rf"\b{_S}[ -][0-9]|\b(this|last|next|previous|earlier) {_S}\b|\bafter {_R}\b", re.IGNORECASE)
BENCHMARKS_MAX_BYTES = 20_000


def checked_files() -> list[str]:
    code = sorted(str(p.relative_to(ROOT)) for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))
    return DOCS + code


def history_lines(text: str) -> list[str]:
    return [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if HISTORY.search(line)]


@pytest.mark.parametrize("name", checked_files())
def test_no_history_wording(name):
    hits = history_lines((ROOT / name).read_text(encoding="utf-8"))
    assert not hits, f"{name} dates figures by the work that produced them (say what is, with a commit):\n" + \
        "\n".join(hits)


def test_history_pattern():
    for bad in [f"measured in {_S.title()} 3", f"the {_S}-1 weights", f"as in the previous {_S}", f"After {_R}"]:
        assert HISTORY.search(bad), bad
    for fine in ['@pytest.fixture(scope="session")', "start_new_session=True", "a training session's loss"]:
        assert not HISTORY.search(fine), fine


def test_benchmarks_is_short():
    size = (ROOT / "BENCHMARKS.md").stat().st_size
    assert size <= BENCHMARKS_MAX_BYTES, f"BENCHMARKS.md is {size} bytes (at most {BENCHMARKS_MAX_BYTES})"


def test_benchmarks_has_the_realdev_markers():
    """benchmarks/realdev.py --write replaces what is between these markers (and refuses without them)."""
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    begin, end = text.find("<!-- realdev:begin -->"), text.find("<!-- realdev:end -->")
    assert 0 <= begin < end
