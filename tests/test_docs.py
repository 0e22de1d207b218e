"""The docs a clone carries: links that resolve, and every code the code uses described."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


def test_readme_links_resolve_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    assert "../shared" not in text
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert "docs/design.md" in links
    for link in links:
        if "://" not in link:
            assert (ROOT / link).exists(), link


def _codes_in(table_heading: str) -> set[str]:
    text = DESIGN.read_text()
    section = text.split(f"## {table_heading}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))


def test_design_describes_every_gate_code():
    from pipeline.gate import REASONS
    assert set(REASONS) | {"kept", "void"} <= _codes_in("Keep-gate codes")


def test_design_names_every_session_end_reason():
    from pipeline.session import END_REASONS
    section = DESIGN.read_text().split("## Sessions", 1)[1].split("\n## ", 1)[0]
    for reason in END_REASONS:
        assert f"`{reason}`" in section, reason
