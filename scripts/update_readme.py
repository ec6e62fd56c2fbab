"""Regenerate the README's generated sections (metric table, configuration table) from the catalogue and the
settings; ``--check`` exits 1 when the README is out of date (``make test`` runs the check)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from telemetry.analytics.events import EVENTS
from telemetry.cli import catalogue_markdown
from telemetry.config import markdown_table


def events_markdown() -> str:
    rows = ["| Event | Meaning |", "| --- | --- |"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in EVENTS.items()]
    return "\n".join(rows)


README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = {"catalogue": catalogue_markdown, "settings": markdown_table, "events": events_markdown}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> section")
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    current = README.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print("README.md's generated sections are stale: run `make readme`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
