"""``python -m app INDEX_DIR [--port 8501] [--show-browser]``: run the explorer page."""
from __future__ import annotations

import argparse
import sys

from app.serve import serve
from data.errors import SingrecError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app", description="Run the singrec explorer page.")
    p.add_argument("index_dir", help="An index directory (built by the index step).")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default=None, help="Address to listen on (default: all interfaces).")
    p.add_argument("--show-browser", action="store_true", help="Open a browser window (not headless).")
    a = p.parse_args(argv)
    try:
        return serve(a.index_dir, port=a.port, headless=not a.show_browser, address=a.address)
    except SingrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
