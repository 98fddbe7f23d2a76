"""Write the column tables of docs/tables.md from the SQLAlchemy models, so the reference cannot drift.

    .venv/bin/python docs/tables.py           # rewrite the generated parts of docs/tables.md
    .venv/bin/python docs/tables.py --check   # exit 1 when docs/tables.md is not what the models say

Each table's column list (and its indexes) sits between `<!-- columns: <table> -->` and `<!-- /columns -->`;
everything else in the file (the prose per table) is written by hand. The descriptions are the ones the
Dagster catalog shows: `info["doc"]` of each column, where it comes from in Canvas (`info["path"]`, or what
fills it) and its profile field group (canvas_assets/warehouse/models.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import sqlalchemy as sa

from canvas_assets.defs.assets.tables import _type_name, field_group, sentence
from canvas_assets.warehouse.columns import FALLBACKS, LOAD, PARENT_MODULE, STAGING_COURSE
from canvas_assets.warehouse.models import metadata

TABLES_MD = Path(__file__).resolve().parent / "tables.md"
BLOCK = re.compile(r"(<!-- columns: (\w+) -->\n)(.*?)(<!-- /columns -->)", re.S)
FILLED_BY = {STAGING_COURSE: "(the staging course)", PARENT_MODULE: "(the module)", LOAD: "(set by the load)"}


def _type(column: sa.Column) -> str:
    name = _type_name(column)
    return "timestamptz (UTC)" if name == "timestamp with time zone" else name


def _from_canvas(column: sa.Column) -> str:
    info = column.info
    if "path" in info:
        fallback = f" (else {FALLBACKS[info['fallback']]})" if info.get("fallback") else ""
        return f"`{info['path']}`{fallback}"
    return FILLED_BY.get(info.get("source", ""), "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def columns_block(table_name: str) -> str:
    """The Markdown column table (and index line) of one table."""
    table = metadata.tables[table_name]
    from_canvas = any("path" in c.info for c in table.columns)
    head = ["column", "type", "null"] + (["from Canvas", "field group"] if from_canvas else []) + ["meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in table.columns:
        cells = [
            f"`{c.name}`" + (" **PK**" if c.primary_key else ""),
            _type(c),
            "yes" if c.nullable else "no",
        ]
        if from_canvas:
            group = field_group(c)
            cells += [_from_canvas(c), f"`{group}`" if group else ""]
        cells.append(sentence(str(c.info.get("doc", ""))))
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    indexes = sorted(", ".join(col.name for col in i.columns) for i in table.indexes)
    if indexes:
        lines += ["", "Indexes: " + "; ".join(f"({i})" for i in indexes) + "."]
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """`text` (docs/tables.md) with every generated block rewritten from the models."""
    seen: list[str] = []

    def block(match: re.Match[str]) -> str:
        seen.append(match.group(2))
        return f"{match.group(1)}\n{columns_block(match.group(2))}\n{match.group(4)}"

    out = BLOCK.sub(block, text)
    missing = sorted(set(metadata.tables) - set(seen))
    if missing:
        raise SystemExit(f"{TABLES_MD.name}: no `<!-- columns: name -->` block for {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail when docs/tables.md is out of date")
    args = parser.parse_args(argv)
    text = TABLES_MD.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print(f"{TABLES_MD.name} is out of date: run `python docs/tables.py`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        TABLES_MD.write_text(new, encoding="utf-8")
        print(f"wrote {TABLES_MD.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
