"""The documentation site builds with ``mkdocs build --strict``, and the check can fail.

The real build covers every page of ``mkdocs.yml`` and every docstring the API
reference renders (mkdocstrings with griffe, Google style). Strict mode turns each
warning into a failure: a link to a page or an anchor that does not exist, a page left
out of the navigation, a docstring griffe cannot read. The second test builds a small
site of its own in ``tmp_path`` with the same theme, extensions and plugins: correct,
it builds; with a link to a missing page, a link to a missing heading and a docstring
that documents a parameter the function does not have, the same command fails and
names all three.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # seconds; a build takes about 5 s on a quiet machine


class Build:
    """A ``mkdocs build --strict`` in a child process, started at once, awaited later."""

    def __init__(self, config: Path, site: Path) -> None:
        self.site = site
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mkdocs",
                "build",
                "--strict",
                "-f",
                str(config),
                "-d",
                str(site),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
            cwd=config.parent,
        )

    def wait(self) -> tuple[int, str]:
        """The exit status and the output; the child is killed past TIMEOUT."""
        try:
            output, _ = self.process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
            pytest.fail(f"mkdocs build ran for more than {TIMEOUT} s:\n{output}")
        return self.process.returncode, output


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Build]]:
    """The three builds of this module, run side by side (about 5 s instead of 8)."""
    started = {}
    try:
        started["site"] = Build(ROOT / "mkdocs.yml", tmp_path_factory.mktemp("site") / "site")
        for name in ("correct", "broken"):
            where = tmp_path_factory.mktemp(name)
            started[name] = Build(_small_site(where, broken=name == "broken"), where / "site")
        yield started
    finally:
        for build in started.values():
            if build.process.poll() is None:
                build.process.kill()
            build.process.communicate()


def test_rest_markup_in_docstrings_becomes_markdown() -> None:
    """tools/griffe_rst.py (a griffe extension in mkdocs.yml): roles, ``::``, tables."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from griffe_rst import rewrite  # noqa: PLC0415
    finally:
        sys.path.remove(str(ROOT / "tools"))
    text = (
        "Use :class:`~transportkit.Network` or :meth:`run <transportkit.Simulation.run>`"
        " and :func:`transportkit.poll`::\n\n    code\n\n"
        "====  ====\nname  what\n====  ====\n:mod:`.proxy`  x\n====  ====\n"
    )
    assert rewrite(text) == (
        "Use `Network` or `run` and `transportkit.poll`:\n\n    code\n\n"
        "```text\n====  ====\nname  what\n====  ====\n.proxy         x\n====  ====\n```\n"
    )


def test_the_site_builds_in_strict_mode(builds: dict[str, Build]) -> None:
    status, output = builds["site"].wait()
    assert status == 0, output
    site = builds["site"].site
    for page in ("index.html", "design/index.html", "reference/sim_backend/index.html"):
        assert (site / page).is_file(), page
    reference = (site / "reference" / "sim_backend" / "index.html").read_text()
    assert "Simulation" in reference and "run_until" in reference  # rendered from docstrings
    assert ":class:`" not in reference  # reST roles were rewritten (tools/griffe_rst.py)


GOOD_MODULE = '''
"""A module for the strict-build check."""


def approve(quantity: int) -> bool:
    """Approve an order.

    Args:
        quantity: Shares.

    Returns:
        Whether it is at most 1,000.
    """
    return quantity <= 1000
'''

PAGE = """# A page

See [the reference](reference.md).
"""


def _small_site(tmp_path: Path, *, broken: bool) -> Path:
    """A copy of the real configuration over two pages and one module of its own."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs, src = tmp_path / "docs", tmp_path / "src"
    docs.mkdir()
    src.mkdir()
    module = GOOD_MODULE
    page = PAGE
    if broken:
        module = module.replace(
            "        quantity: Shares.",
            "        quantity: Shares.\n        price: Not a parameter.",
        )
        page += "\nAnd [a page that does not exist](no-such-page.md).\n"
        page += "\nAnd [a heading it does not have](reference.md#no-such-heading).\n"
    (src / "tk_docs_probe.py").write_text(textwrap.dedent(module), encoding="utf-8")
    (docs / "index.md").write_text(page, encoding="utf-8")
    (docs / "reference.md").write_text("# Reference\n\n::: tk_docs_probe\n", encoding="utf-8")
    config["docs_dir"] = str(docs)
    config["nav"] = [{"Home": "index.md"}, {"Reference": "reference.md"}]
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(src)]
            extensions = python["options"].get("extensions", [])
            python["options"]["extensions"] = [str(ROOT / e) for e in extensions]
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["correct", "broken"])
def test_a_broken_link_or_docstring_fails_the_strict_build(
    builds: dict[str, Build], name: str
) -> None:
    status, output = builds[name].wait()
    if name == "correct":
        assert status == 0, output
        return
    assert status != 0, output
    assert "no-such-page.md" in output, output
    assert "no-such-heading" in output, output
    assert "price" in output, output  # griffe: a documented parameter the function lacks
