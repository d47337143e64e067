"""The README and the pages under docs/: every relative link resolves (the file exists, and a
#fragment names a heading of its page), every page is reachable from the README, and the
README keeps what CI runs."""
import glob
import os
import re

import pytest

from conftest import REPO

INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def doc_files(root: str = REPO):
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def _prose_lines(text: str):
    """The lines outside fenced and indented code blocks."""
    fenced = False
    previous_blank = True
    in_indented = False
    for line in text.splitlines():
        if re.match(r"^\s{0,3}(```|~~~)", line):
            fenced = not fenced
            previous_blank = False
            continue
        if fenced:
            continue
        if line.startswith(("    ", "\t")) and (previous_blank or in_indented):
            in_indented = True
            continue
        in_indented = in_indented and not line.strip()
        previous_blank = not line.strip()
        yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link markup and code markers dropped, lower case,
    punctuation removed (letters, digits, '_' and '-' stay), spaces as '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: str):
    seen = {}
    result = set()
    with open(path, encoding="utf-8") as f:
        for line in _prose_lines(f.read()):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(path: str):
    with open(path, encoding="utf-8") as f:
        for line in _prose_lines(f.read()):
            line = re.sub(r"`+[^`]*`+", "", line)  # code spans hold no links
            m = REFERENCE_DEF.match(line)
            if m:
                yield m.group(1)
                continue
            yield from INLINE_LINK.findall(line)


def broken_links(files):
    """(file, link) for every relative link whose file, or heading, is missing."""
    broken = []
    for path in files:
        for link in links(path):
            if SCHEME.match(link):
                continue  # https:, mailto: ...: not checked here
            target, _, fragment = link.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
            if not os.path.exists(full):
                broken.append((path, link))
            elif fragment and full.endswith(".md") and fragment not in anchors(full):
                broken.append((path, link))
    return broken


def test_every_relative_link_resolves():
    assert broken_links(doc_files()) == []


def test_broken_links_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# A page\n\n## Why [-1, 1]\n\n## Output formats, and reading them back\n\n"
        "## `save_h5` versus `save_numpy`\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "# Title\n\n"
        "[ok](docs/page.md) [ok](docs/page.md#why--1-1) [ok](docs/page.md#save_h5-versus-save_numpy)\n"
        "[ok](docs/page.md#output-formats-and-reading-them-back) [ok](docs/page.md#twice-1)\n"
        "[ok](#title) [ok](https://example.org/missing.md) [ok](docs/)\n"
        "`[not a link](missing-in-code.md)`\n\n"
        "    [not a link](missing-in-indented-code.md)\n\n"
        "```\n[not a link](missing-in-fence.md)\n```\n\n"
        "[file](docs/missing.md) [heading](docs/page.md#missing) [here](#missing)\n"
        "[ref]: docs/gone.md\n", encoding="utf-8")
    found = [link for _, link in broken_links(doc_files(str(tmp_path)))]
    assert found == ["docs/missing.md", "docs/page.md#missing", "#missing", "docs/gone.md"]


@pytest.mark.parametrize("page", sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))))
def test_every_docs_page_is_linked_from_the_readme(page):
    assert any(link.partition("#")[0] == f"docs/{page}" for link in links(os.path.join(REPO, "README.md")))


def test_readme_is_short_and_keeps_what_ci_runs():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert len(readme.splitlines()) <= 300
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    # CI installs and tests as the README says
    assert re.search(r'^python -m pip install( --quiet)? "\.\[test,cluster\]"$', ci, re.M)
    assert re.search(r"^python -m pytest -q$", ci, re.M)
    assert 'pip install ".[test,cluster]" && python -m pytest -q' in readme
