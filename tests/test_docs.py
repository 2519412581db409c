"""The docs stay true to the code: generated parts up to date, links and anchors resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def test_generated_docs_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    """design-space.md and the guide's --help blocks match the library and the CLI (fix: docs/generate.py)."""
    code = _generator().main(["--check"])
    assert code == 0, capsys.readouterr().out


def test_every_metric_without_a_tree_has_a_documented_formula() -> None:
    from evoprune.metrics import list_metrics

    custom = {m.name for m in list_metrics() if m.tree is None}
    assert custom == set(_generator().CUSTOM_FORMULAS)


def test_design_space_lists_every_operand_primitive_and_metric() -> None:
    from evoprune.expr import OPERANDS, PRIMITIVES
    from evoprune.metrics import list_metrics

    text = (ROOT / "docs" / "design-space.md").read_text()
    for name in [*OPERANDS, *PRIMITIVES]:
        assert f"| `{name}` |" in text
    for m in list_metrics():
        assert f"### {m.name}\n" in text


def test_guide_has_a_page_with_help_for_every_command() -> None:
    from evoprune.cli import COMMANDS

    for name in COMMANDS:
        page = ROOT / "docs" / "guide" / f"{name}.md"
        assert page.is_file(), f"docs/guide/{name}.md is missing"
        assert f"<!-- help: evoprune {name} -->" in page.read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: broken link {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading for #{anchor} in {resolved.name}"
