"""The documentation stays true to the code: docs/configuration.md is the generated one, and every
relative link of README.md and docs/*.md reaches a file (and, for a Markdown file, its heading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulations.config_doc import configuration_markdown

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def links(text: str) -> list[str]:
    """Link targets outside code blocks and code spans."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def anchors(text: str) -> set[str]:
    """Heading anchors as GitHub makes them (lower case, punctuation dropped, spaces to dashes, -1 on repeats)."""
    found: set[str] = set(HTML_ANCHOR.findall(text))
    for heading in HEADING.findall(FENCE.sub("", text)):
        plain = re.sub(r"[`*]|<[^>]+>", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading))
        slug = re.sub(r"[^\w\- ]", "", plain.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_configuration_doc_is_generated_from_the_code():
    written = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert written == configuration_markdown(), "regenerate with python -m simulations.config_doc"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file(doc: Path):
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in links(text):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        path = path.split("?", 1)[0]
        where = (doc.parent / path).resolve() if path else doc
        if not where.exists():
            broken.append(f"{target} (no {where.relative_to(ROOT) if where.is_relative_to(ROOT) else where})")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading #{anchor} in {where.name})")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links: {', '.join(broken)}"


def test_the_link_checker_sees_links_and_skips_code():
    text = "[a](docs/x.md) `[b](y.md)` ![c](assets/p.png#z)\n```\n[d](z.md)\n```\n[e]: ref.md\n"
    assert links(text) == ["docs/x.md", "assets/p.png#z", "ref.md"]
    assert anchors("# Site policy\n## Results (measured, 2 cores)\n# Site policy\n") == {
        "site-policy",
        "results-measured-2-cores",
        "site-policy-1",
    }
