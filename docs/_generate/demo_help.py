"""Write ``vaekit-demo --help``, from the program itself, into _generated/demo_help.txt."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from vaekit.demo.__main__ import main

OUT = Path(__file__).resolve().parents[1] / "_generated" / "demo_help.txt"
COLUMNS = "100"  # argparse wraps to the terminal; the page gets the same text on every machine


def help_text() -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = COLUMNS
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(["--help"])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return out.getvalue()


if __name__ == "__main__":
    OUT.write_text(help_text())
