"""A griffe extension for the documentation site: reST markup in docstrings, as Markdown.

The docstrings are Google style, read by ``help()`` and IDEs as plain text, and use
a little reStructuredText: roles (``:class:`~transportkit.Network```), literal blocks
introduced by ``::`` and simple tables (rows between lines of ``=====``).
mkdocstrings renders docstrings as Markdown, where these show as raw markup. This
extension, listed in ``mkdocs.yml``, rewrites each docstring as it is loaded: a role
becomes inline code of its target (``~`` keeps the last name, ``text <target>`` keeps
the text), ``::`` becomes ``:``, and a simple table becomes a fenced text block,
which keeps its columns. The sources are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`([^`]+)`")
TABLE_RULE = re.compile(r"^[ \t]*=+(?:[ \t]+=+)+[ \t]*$")


def _name(match: re.Match[str]) -> str:
    """What a role shows: its text, or its target (the last name of a ``~`` target)."""
    target = match.group(1).strip()
    shown = re.match(r"(.*?)\s*<[^>]+>$", target)
    if shown:
        return shown.group(1)
    return target[1:].rsplit(".", 1)[-1] if target.startswith("~") else target


def _role(match: re.Match[str]) -> str:
    return f"`{_name(match)}`"


def _padded(match: re.Match[str]) -> str:
    """Inside a table: the name, padded to the role's width so columns stay aligned."""
    return _name(match).ljust(len(match.group(0)))


def _tables(text: str) -> str:
    """Fence each simple table: from its first rule line to its third."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if TABLE_RULE.match(lines[i]):
            rules = [j for j in range(i, len(lines)) if TABLE_RULE.match(lines[j])][:3]
            if len(rules) == 3:
                indent = re.match(r"[ \t]*", lines[i]).group(0)  # type: ignore[union-attr]
                table = [ROLE.sub(_padded, line) for line in lines[i : rules[2] + 1]]
                out += [f"{indent}```text", *table, f"{indent}```"]
                i = rules[2] + 1
                continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def rewrite(text: str) -> str:
    """The Markdown reading of a docstring written with a little reST."""
    text = _tables(text)  # first: roles in a table keep its columns
    text = ROLE.sub(_role, text)
    text = re.sub(r" ::$", "", text, flags=re.M)  # "Paragraph ::" introduces a block
    return re.sub(r"::$", ":", text, flags=re.M)  # "For example::" keeps one colon


class RstToMarkdown(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`rewrite`."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring, once (an object can be reached twice)."""
        if obj.docstring is not None and not obj.extra["transportkit"].get("rst_rewritten"):
            obj.docstring.value = rewrite(obj.docstring.value)
            obj.extra["transportkit"]["rst_rewritten"] = True
