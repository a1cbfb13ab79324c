"""Shared by the benchmark scripts: write one section of BENCHMARKS.md (scripts run as `python benchmarks/X.py`,
so this folder is on sys.path and `from _report import write_section` works)."""
from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the whole ``## title`` section of a markdown file, leaving other sections alone.

    Everything in the section is replaced, including text added by hand, so the scripts call this only when
    asked to (``--write``)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)
