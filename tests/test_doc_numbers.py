"""Every measured number a page marks with ``<!-- from: FILE; KEY -->VALUE<!-- /from -->`` is what
``benchmarks/doc_numbers.py`` renders from the committed file it names (issue 36): a hand edit of a marked number, a
result file changed without regenerating the pages, or a marker naming a missing file or key fails here. Then the
grammar, on made-up files."""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python reports/regenerate.py --only doc-numbers"


def doc_numbers_script():
    spec = importlib.util.spec_from_file_location("doc_numbers", ROOT / "benchmarks" / "doc_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


doc_numbers = doc_numbers_script()
# pages known to mark numbers: a page that loses all its markers fails, rather than passing with nothing to check
MARKED = ("docs/evaluation.md", "docs/scaling-out.md", "docs/speed-and-memory.md")


@pytest.mark.parametrize("page", doc_numbers.pages())
def test_the_page_shows_the_numbers_its_files_give(page):
    text = (ROOT / page).read_text()
    fresh, errors = doc_numbers.rendered(text, ROOT, page)
    assert not errors, "\n".join(errors)
    diff = "\n".join(difflib.unified_diff(text.splitlines(), fresh.splitlines(), "page", "rendered", lineterm=""))
    assert fresh == text, (
        f"{page}'s marked numbers are not what their files give; rewrite them with `{REGENERATE}`:\n{diff}"
    )


def test_the_pages_that_quote_results_still_mark_them():
    for page in MARKED:
        assert doc_numbers.regions((ROOT / page).read_text()), f"{page} has lost its <!-- from: ... --> markers"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.json").write_text(json.dumps({
        "runs": [{"peak_gib": 2.5209884643554688, "wall_s": 273}, {"peak_gib": 1.8783798217773438, "wall_s": 200}],
        "points": {"amapo-amapo": {"2048": {"peak_rss": 3367485440}}, "trl-dpo": {"2048": {"peak_rss": 8459096064}}},
        "cases": {"vocab 128256, 256-512 words": {"longest": 8192, "date": "2026-12-07", "ok": True}},
    }))  # fmt: skip
    (tmp_path / "r" / "b.json").write_text(json.dumps({"runs": [{"peak_gib": 3.71}, {"peak_gib": 2.89}]}))
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ("r/a.json; runs.1.peak_gib; .2f", "1.88"),
        ("r/a.json; runs.1.peak_gib / runs.0.peak_gib; .2f", "0.75"),
        ("r/a.json; points.amapo-amapo.2048.peak_rss / points.trl-dpo.2048.peak_rss; .2f", "0.40"),
        ("r/a.json; points.trl-dpo.2048.peak_rss / 2 ** 30; .2f", "7.88"),
        ('r/a.json; cases."vocab 128256, 256-512 words".longest; ,', "8,192"),
        ('r/a.json; cases."vocab 128256, 256-512 words".date', "2026-12-07"),
        ("r/a.json; runs.0.wall_s / 60; .1f", "4.6"),  # 4.55 exactly: half up, where a float's 4.55 prints 4.5
        ("r/a.json; runs.0.wall_s", "273"),
        ("r/a.json; 1 - runs.1.peak_gib / runs.0.peak_gib; .0%", "25%"),
        ("r/a.json; max(runs.0.wall_s, runs.1.wall_s) - min(runs.0.wall_s, runs.1.wall_s)", "73"),
        ("a=r/a.json b=r/b.json; (b.runs.1.peak_gib - a.runs.1.peak_gib) / (b.runs.0.peak_gib - a.runs.0.peak_gib);"
         " .2f", "0.85"),
        ("  r/a.json ;\n   runs.1.peak_gib ;  .3f ", "1.878"),  # a marker's text may wrap
    ],
)  # fmt: skip
def test_a_marker_renders_its_value_from_the_file(root, spec, value):
    assert doc_numbers.render(spec, root) == value


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("r/none.json; runs.0.peak_gib", r"r/none\.json: no such file"),
        ("r/a.json; runs.2.peak_gib", r"r/a\.json: no key runs\.2"),
        ("r/a.json; points.amapo-amapo.4096.peak_rss", r"no key points\.amapo-amapo\.4096"),
        ("r/a.json; runs.0.peak_gib - runs.0.nope", r"no key runs\.0\.nope"),
        ("a=r/a.json b=r/b.json; c.runs.0.peak_gib", r"starts with none of the sources' names \(a, b\)"),
        ("a=r/a.json r/b.json; a.runs.0.peak_gib", r"a distinct NAME=PATH each"),
        ("r/a.json; runs.0", r"is not one value"),
        ('r/a.json; cases."vocab 128256, 256-512 words".date * 2', r"is not a number"),
        ('r/a.json; cases."vocab 128256, 256-512 words".ok / 2', r"is not a number"),
        ("r/a.json; __import__(1)", r"no key __import__"),
        ("r/a.json; runs.0.peak_gib if 1 else 0", r"no key if|only paths"),
        ("r/a.json; runs.0.peak_gib +", r"not an expression"),
        ("r/a.json", r"a marker is 'from: SOURCES; EXPRESSION'"),
        ("r/a.json; runs..0", r"not a key path"),
        ("r/a.json; runs.0.peak_gib; .2q", r"format '\.2q'"),
        ("r/notes.md; a", r"a source is a JSON file"),
    ],
)
def test_a_marker_that_cannot_render_says_why(root, spec, error):
    with pytest.raises(doc_numbers.MarkerError, match=error):
        doc_numbers.render(spec, root)


def test_a_page_is_rerendered_in_its_regions_only_and_bad_markers_are_named(root):
    marker = "<!-- from: r/a.json; runs.1.peak_gib; .2f -->"
    page = f"# Page\n\nSP 2 held {marker}9.99<!-- /from --> GiB, typed by hand 9.99.\n"
    fresh, errors = doc_numbers.rendered(page, root, "p.md")
    assert (fresh, errors) == (page.replace("9.99<", "1.88<"), [])
    assert doc_numbers.regions(fresh) == [(3, "r/a.json; runs.1.peak_gib; .2f", "1.88")]

    broken = (
        "a\n"
        "x <!-- from: r/a.json; runs.9.peak_gib -->1<!-- /from -->\n"  # missing key
        "y <!-- from: r/a.json; runs.1.peak_gib -->\n1.88<!-- /from -->\n"  # a region over two lines
        f"{marker}1.88<!-- /from --> starts its line\n"
    )
    _, errors = doc_numbers.rendered(broken, root, "p.md")
    assert errors == [
        "p.md:2: r/a.json: no key runs.9",
        "p.md:3: <!-- from: without its pair on one line",
        "p.md:4: <!-- /from --> without its pair on one line",
        "p.md:5: a marker starts its line, which would make the line an HTML block outside the paragraph: put a word "
        "before it",
    ]


def test_write_rewrites_stale_numbers_and_refuses_a_broken_marker(root):
    (root / "docs").mkdir()
    stale = "Peak <!-- from: r/b.json; runs.0.peak_gib -->3.7<!-- /from --> GiB.\n"
    (root / "docs" / "page.md").write_text(stale)
    (root / "README.md").write_text("No markers, 1.23 GiB.\n")
    assert doc_numbers.write(root) == ["docs/page.md"]
    assert (root / "docs" / "page.md").read_text() == stale.replace("3.7<", "3.71<")
    assert doc_numbers.write(root) == []
    (root / "README.md").write_text("x <!-- from: r/b.json; runs.5 -->1<!-- /from -->\n")
    with pytest.raises(SystemExit, match=r"README\.md:1: r/b\.json: no key runs\.5"):
        doc_numbers.write(root)
    assert (root / "docs" / "page.md").read_text() == stale.replace("3.7<", "3.71<")
