"""The README's code blocks, so that tests run them as written."""

from __future__ import annotations

import re

from tests.conftest import ROOT

__all__ = ["blocks", "commands"]


def blocks(section: str, lang: str) -> list[str]:
    """The fenced `lang` blocks under the heading `section`, up to the next heading of its level."""
    found: list[str] = []
    level, fence, block = 0, None, []
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if fence is None:
                fence, block = line[3:].strip(), []
            else:
                if level and fence == lang:
                    found.append("\n".join(block) + "\n")
                fence = None
            continue
        if fence is not None:
            block.append(line)
            continue
        heading = re.match(r"(#+) (.*)", line)
        if heading and level and len(heading.group(1)) <= level:
            break  # the section ended
        if heading and heading.group(2) == section:
            level = len(heading.group(1))
    assert level, f"README.md has no section {section!r}"
    return found


def commands(block: str) -> list[str]:
    """A shell block's commands, each without its trailing comment; a line ending in a
    backslash goes on in the next, as in a shell."""
    found, pending = [], ""
    for line in block.splitlines():
        if not line.strip():
            continue
        line = re.sub(r"\s+#\s.*$", "", line)
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        found.append(pending + line)
        pending = ""
    return found
