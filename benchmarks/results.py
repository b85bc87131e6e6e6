"""``benchmarks/RESULTS.md`` is made of sections (``## title``), each written by one benchmark.

>>> doc = "# Benchmark results\\n\\n## A\\n\\nold a\\n\\n## B\\n\\nb\\n"
>>> print(replace_section(doc, "A", "## A\\n\\nnew a\\n"))
# Benchmark results
<BLANKLINE>
## A
<BLANKLINE>
new a
<BLANKLINE>
## B
<BLANKLINE>
b
<BLANKLINE>
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["replace_section", "write_section"]

HEADER = "# Benchmark results\n\n"


def replace_section(document: str, title: str, section: str) -> str:
    """``document`` with its ``## title`` section replaced by ``section`` (appended when absent);
    the other sections keep their text and order."""
    section = section.strip("\n") + "\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(document):
        return pattern.sub(lambda _: section + "\n", document, count=1).rstrip("\n") + "\n"
    return document.rstrip("\n") + "\n\n" + section


def write_section(path: Path, title: str, section: str) -> None:
    current = path.read_text() if path.exists() else HEADER
    path.write_text(replace_section(current, title, section))
