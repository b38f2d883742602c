"""Every shell block of the documentation runs here, or says why it cannot (issue 36).

This docstring is the reference for the markers; tests/doc_blocks.py implements it.

Pages: README.md and every ``docs/**/*.md`` (``AMAPO_DOC_PAGES``, paths separated by ``os.pathsep``, replaces
that list, e.g. to try marked pages outside the repository).

Blocks: every fenced code block (``` or ~~~, at any indentation, closed by a fence of the same character at least
as long with nothing after it; a fence inside another block is that block's text) whose info string's first word
is ``bash``, ``sh``, ``shell`` or ``console``. Other blocks are ignored.

Marker: the line just before a block's opening fence (no blank line between) is, after leading whitespace, one of

    <!-- doc-test: run -->
    <!-- doc-test: run; CLAUSE; CLAUSE ... -->
    <!-- doc-test: skip: REASON -->

``skip: REASON``: the block is not run; REASON (the rest of the comment, ``;`` included) must be non-empty and says
why (needs a GPU, the Hub, hours).

``run``: the block runs as a bash script (``bash -euo pipefail``) from the root of a fresh copy of the repository
(the files ``git ls-files -co --exclude-standard`` lists: tracked and untracked files, uncommitted changes included,
ignored files and .git not), with the ``amapo`` and ``python`` of the environment running the tests, the copy's
``src`` first on ``PYTHONPATH`` (the copy's code runs), no network to the Hub (``HF_HUB_OFFLINE=1``,
``HF_DATASETS_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``, an empty ``HF_HOME``), ``AMAPO_CACHE`` shared by the test
session, no stdin, and a timeout (``AMAPO_DOC_TIMEOUT`` seconds, default 600). In a ``console`` block that has
lines starting with ``$ ``, only those lines (without the ``$``) and their continuation lines run; the others are
the output it shows. Clauses after ``run``, separated by ``;`` (outside quotes), in any order, each any number of
times but ``after``:

- ``append "PREFIX" "OPTIONS"``: every command of the block whose text starts with PREFIX (after leading
  whitespace; a line and the lines that its trailing backslashes continue are one command) gets `` OPTIONS``
  appended at its end (the end of its last line, before a trailing ``# comment``). A PREFIX that starts no command
  of the block is an error. This is how a block runs at its smallest size: ``append "amapo train" "--max_steps 2"``.
- ``after: previous``: the block runs in the same working folder right after the previous runnable block of the
  same page (its files, not its shell variables, carry over); the blocks so linked form one chain, one test, and a
  chain stops at its first failing block. Without a previous runnable block on the page it is an error.
- ``expect "REGEX"``: the block's output (stdout and stderr together) must contain a match of the Python regular
  expression REGEX (``re.search``, ``re.MULTILINE``); this is how a page's numbers about a command's output are
  checked.

In a quoted string ``\\"`` stands for ``"``; every other character, ``\\`` included, stands for itself.

A block fails on a non-zero exit status (the last 60 lines of output shown), a line ``Traceback (most recent call
last)`` in its output, or an ``expect`` that does not match (the test names the page line and the regex).

Errors (each names page and line): a shell block without a marker; a marker separated from its fence by a blank
line, or before no shell block; an unknown verb or clause; ``skip`` without a reason; an append PREFIX that starts no
command; ``after: previous`` with no runnable block before it; an invalid or empty ``expect`` regex; a fence never
closed.

The block runs are slow (minutes): ``AMAPO_DOC_BLOCKS=skip`` skips them (CI's second pass, on the oldest
transformers, sets it); the parser's tests and the marker check always run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from doc_blocks import Block, chains, documentation_pages, parse_page, parse_pages

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = float(os.environ.get("AMAPO_DOC_TIMEOUT", "600"))
TRACEBACK = re.compile(r"^\s*Traceback \(most recent call last\)", re.M)


def pages() -> list[Path]:
    chosen = os.environ.get("AMAPO_DOC_PAGES")
    if chosen:
        return [Path(p) for p in chosen.split(os.pathsep) if p]
    return documentation_pages(ROOT)


def blocks_of(text: str, page: str = "page.md") -> list[Block]:
    blocks, errors = parse_page(text, page)
    assert errors == []
    return blocks


def errors_of(text: str, page: str = "page.md") -> list[str]:
    return parse_page(text, page)[1]


# --- the parser, on small pages ---


def test_run_and_skip_markers():
    page = """# Title

<!-- doc-test: run -->
```bash
amapo train --help
```

Text.

<!-- doc-test: skip: needs a GPU; and 80 GB -->
```sh
amapo train --config llama3-8b-base-amapo
```
"""
    run, skip = blocks_of(page)
    assert (run.id, run.action, run.script, run.language) == ("page.md:4", "run", "amapo train --help\n", "bash")
    assert (skip.id, skip.action, skip.reason) == ("page.md:11", "skip", "needs a GPU; and 80 GB")


def test_missing_marker_is_an_error_naming_file_and_line():
    page = "Intro\n\n```bash\nls\n```\n\n<!-- doc-test: run -->\n```console\nls\n```\n"
    assert errors_of(page, "docs/x.md") == [
        "docs/x.md:3: bash block without a doc-test marker on the line before its fence: "
        "`<!-- doc-test: run -->` or `<!-- doc-test: skip: REASON -->`"
    ]


def test_blank_line_between_marker_and_fence_is_an_error():
    (error,) = errors_of("<!-- doc-test: run -->\n\n```bash\nls\n```\n")
    assert error.startswith("page.md:3: bash block without a doc-test marker")
    assert "the marker at line 1 is not on the line just before the fence" in error


def test_unknown_verb_and_clause():
    assert errors_of("<!-- doc-test: runn -->\n```bash\nls\n```\n") == [
        "page.md:1: unknown doc-test verb 'runn' (expected `run` or `skip: REASON`)"
    ]
    (error,) = errors_of('<!-- doc-test: run; apend "ls" "-l" -->\n```bash\nls\n```\n')
    assert error.startswith('page.md:1: unknown clause \'apend "ls" "-l"\'')
    (error,) = errors_of("<!-- doc-test: run; after: next -->\n```bash\nls\n```\n")
    assert error.startswith("page.md:1: unknown after clause")


@pytest.mark.parametrize("marker", ["skip:", "skip:   ", "skip", "skip because"])
def test_skip_needs_a_reason(marker):
    assert errors_of(f"<!-- doc-test: {marker} -->\n```bash\nls\n```\n") == [
        "page.md:1: a skipped block needs its reason: `<!-- doc-test: skip: REASON -->`"
    ]


def test_append_goes_at_the_end_of_a_continued_command_before_its_comment():
    page = """<!-- doc-test: run; append "amapo train" "--max_steps 2"; append "amapo eval" "--datasets x=\\"a b\\"" -->
```bash
amapo train --config builtin \\
    --beta 2.5 --learning_rate 5e-7   # a comment with "quotes" and #
  amapo train --eval_split "train[95%:]" --note '# not a comment'
amapo eval --model_name_or_path out
amapo generate --x 1  # amapo train in a comment
# amapo train: a comment line
```
"""
    (block,) = blocks_of(page)
    assert block.script == (
        "amapo train --config builtin \\\n"
        '    --beta 2.5 --learning_rate 5e-7 --max_steps 2   # a comment with "quotes" and #\n'
        "  amapo train --eval_split \"train[95%:]\" --note '# not a comment' --max_steps 2\n"
        'amapo eval --model_name_or_path out --datasets x="a b"\n'
        "amapo generate --x 1  # amapo train in a comment\n"
        "# amapo train: a comment line\n"
    )
    assert block.appends == (("amapo train", "--max_steps 2"), ("amapo eval", '--datasets x="a b"'))


def test_append_prefix_that_starts_no_command_is_an_error():
    page = '<!-- doc-test: run; append "amapo eval" "--x 1" -->\n```bash\namapo train \\\n  amapo eval\n```\n'
    assert errors_of(page) == ["page.md:1: append prefix 'amapo eval' starts no command of the block"]


def test_after_previous_chains_blocks_of_one_page():
    page = """<!-- doc-test: run -->
```bash
amapo train
```
<!-- doc-test: skip: the Hub -->
```bash
amapo eval --datasets rm-bench
```
<!-- doc-test: run; after: previous; expect "accuracy \\d\\.\\d+" -->
```bash
amapo eval --model_name_or_path outputs/amapo-builtin
```
<!-- doc-test: run -->
```bash
amapo compare
```
"""
    blocks = blocks_of(page)
    assert blocks[2].after_previous and blocks[2].expects == (r"accuracy \d\.\d+",)
    assert [[b.id for b in chain] for chain in chains(blocks)] == [["page.md:2", "page.md:10"], ["page.md:14"]]
    other, _ = parse_page("<!-- doc-test: run -->\n```bash\nls\n```\n", "other.md")
    assert [[b.id for b in chain] for chain in chains(blocks + other)][-1] == ["other.md:2"]


def test_after_previous_without_a_previous_runnable_block_is_an_error():
    page = (
        "<!-- doc-test: skip: hours -->\n```bash\namapo compare\n```\n"
        "<!-- doc-test: run; after: previous -->\n```bash\nls\n```\n"
    )
    assert errors_of(page) == ["page.md:5: `after: previous` but no runnable block comes before it on this page"]


def test_expect_must_be_a_valid_non_empty_regex():
    (error,) = errors_of('<!-- doc-test: run; expect "(" -->\n```bash\nls\n```\n')
    assert error.startswith("page.md:1: expect '(' is not a valid regular expression")
    assert errors_of('<!-- doc-test: run; expect "" -->\n```bash\nls\n```\n') == [
        "page.md:1: expect needs a non-empty regular expression"
    ]


def test_nested_and_indented_fences():
    page = """Some markdown shown as an example:

````markdown
```bash
not a block of this page
```
````

- A list item:

  <!-- doc-test: run -->
  ```bash
  echo one
    echo two
  ```

~~~~sh
```
~~~~
"""
    blocks, errors = parse_page(page, "page.md")
    assert [b.id for b in blocks] == ["page.md:12"]
    assert blocks[0].script == "echo one\n  echo two\n"
    assert errors == [
        "page.md:17: sh block without a doc-test marker on the line before its fence: "
        "`<!-- doc-test: run -->` or `<!-- doc-test: skip: REASON -->`"
    ]


def test_non_shell_blocks_are_ignored_and_a_marker_before_one_is_an_error():
    page = "```python\nprint(1)\n```\n\n```\nplain\n```\n```Bash title=x\nls\n```\n"
    assert [e.split(":", 2)[1] for e in errors_of(page)] == ["8"]  # only the bash block (info string's first word)
    assert errors_of("<!-- doc-test: run -->\n```python\nprint(1)\n```\n") == [
        "page.md:1: doc-test marker not on the line just before a shell block's fence"
    ]


def test_console_blocks_run_their_prompted_lines_only():
    page = """<!-- doc-test: run; append "amapo train" "--max_steps 2" -->
```console
$ amapo train \\
    --beta 2
step 1 loss 0.69
$ ls outputs
amapo-builtin
```
"""
    (block,) = blocks_of(page)
    assert block.script == "amapo train \\\n    --beta 2 --max_steps 2\nls outputs\n"


def test_unclosed_fence_is_an_error():
    assert errors_of("<!-- doc-test: run -->\n```bash\nls\n")[0] == "page.md:2: code fence never closed"


# --- the pages themselves ---


def test_every_shell_block_of_the_documentation_has_a_valid_marker():
    _, errors = parse_pages(pages(), ROOT)
    assert not errors, "shell blocks without a valid doc-test marker (grammar: tests/test_docs_commands.py):\n" + (
        "\n".join(errors)
    )


def runnable_chains() -> list[list[Block]]:
    blocks, _ = parse_pages(pages(), ROOT)
    return chains(blocks)


def copy_repository(destination: Path) -> Path:
    """The files of the work tree that git would list (tracked and untracked, not ignored), without .git."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = ROOT / name
        if not source.is_file():  # deleted in the work tree, or a submodule
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return destination


def block_environment(copy: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy / "src"), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home / "hf"))
    env.pop("AMAPO_DOC_PAGES", None)
    return env


def run_script(script: str, cwd: Path, env: dict[str, str]) -> tuple[int | None, str]:
    """Exit status (None on timeout) and output of a bash script; on timeout its whole process group is killed."""
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


def tail(output: str, lines: int = 60) -> str:
    return "\n".join(output.splitlines()[-lines:])


def test_the_copy_runs_its_own_amapo(tmp_path):
    copy = tmp_path / "repo"
    (copy / "src" / "amapo").mkdir(parents=True)
    (copy / "src" / "amapo" / "__init__.py").write_text("")
    code, output = run_script(
        'python -c "import amapo; print(amapo.__file__)"; command -v amapo', copy, block_environment(copy, tmp_path)
    )
    assert code == 0, output
    module, executable = output.splitlines()
    assert Path(module) == copy / "src" / "amapo" / "__init__.py"
    assert Path(executable).parent == Path(sys.executable).parent


@pytest.mark.skipif(os.environ.get("AMAPO_DOC_BLOCKS") == "skip", reason="AMAPO_DOC_BLOCKS=skip")
@pytest.mark.parametrize("chain", runnable_chains(), ids=lambda chain: chain[0].id)
def test_documented_commands_run(chain: list[Block], tmp_path):
    copy = copy_repository(tmp_path / "repo")
    env = block_environment(copy, tmp_path)
    for block in chain:
        started = time.monotonic()
        code, output = run_script(block.script, copy, env)
        seconds = time.monotonic() - started
        print(f"{block.id}: {seconds:.1f} s, exit {code}")
        shown = f"{block.id} ran:\n{block.script}\n--- last 60 lines of its output ---\n{tail(output)}"
        if code is None:
            pytest.fail(f"{block.id} took more than {TIMEOUT:.0f} s\n{shown}", pytrace=False)
        if code != 0:
            pytest.fail(f"{block.id} exited with status {code}\n{shown}", pytrace=False)
        if TRACEBACK.search(output):
            pytest.fail(f"{block.id} printed a traceback\n{shown}", pytrace=False)
        for pattern in block.expects:
            if not re.search(pattern, output, re.M):
                where = f"{block.page}:{block.line - 1}"
                pytest.fail(
                    f"{where}: output contradicts the page: no match of expect {pattern!r}\n{shown}", pytrace=False
                )
