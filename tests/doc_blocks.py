"""Shell blocks of the documentation pages and their doc-test markers (the grammar: tests/test_docs_commands.py).

Pure functions on page text (``parse_page``) and the grouping of runnable blocks into chains (``chains``); reading
files is left to ``parse_pages``. Nothing here runs a command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console"})

MARKER = re.compile(r"^\s*<!--\s*doc-test\s*:(?P<body>.*?)-->\s*$")
OPENING_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
QUOTED = r'"((?:[^"\\]|\\.)*)"'  # a double-quoted string; \" stands for "
APPEND = re.compile(rf"^append\s+{QUOTED}\s+{QUOTED}$", re.S)
EXPECT = re.compile(rf"^expect\s+{QUOTED}$", re.S)
AFTER = re.compile(r"^after\s*:\s*(?P<what>.*)$", re.S)


@dataclass(frozen=True)
class Block:
    """One shell block of a page and what its marker says.

    ``line`` is the 1-based line of the opening fence (the block's id is ``page:line``); ``script`` is what runs,
    with the appended options; ``source`` the block as the page shows it."""

    page: str
    line: int
    language: str
    source: str
    action: str  # "run" or "skip"
    reason: str = ""  # skip only
    script: str = ""  # run only
    appends: tuple[tuple[str, str], ...] = ()
    expects: tuple[str, ...] = ()
    after_previous: bool = False

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Fence:
    line: int  # 1-based line of the opening fence
    indent: int
    language: str
    body: list[str] = field(default_factory=list)
    closed: bool = False


def unquote(text: str) -> str:
    return text.replace('\\"', '"')


def split_clauses(body: str) -> list[str]:
    """The marker's clauses: its text split at every ``;`` outside double quotes."""
    clauses, current, quoted, i = [], [], False, 0
    while i < len(body):
        char = body[i]
        if quoted and char == "\\" and i + 1 < len(body):
            current.append(body[i : i + 2])
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            clauses.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    clauses.append("".join(current).strip())
    return clauses


def fences(lines: list[str]) -> tuple[list[Fence], list[int]]:
    """Every fenced code block of the page (CommonMark fences: ``` or ~~~, any indentation, closed by a fence of the
    same character at least as long with nothing after it), and the lines of doc-test markers outside them."""
    found: list[Fence] = []
    markers: list[int] = []
    current: Fence | None = None
    close = None
    for number, text in enumerate(lines, start=1):
        if current is not None:
            if close.match(text):
                current.closed = True
                current = None
            else:
                # a line of the block loses as much indentation as the opening fence had, at most
                stripped = len(text) - len(text.lstrip(" "))
                current.body.append(text[min(stripped, current.indent) :])
            continue
        opening = OPENING_FENCE.match(text)
        if opening and not (opening["fence"][0] == "`" and "`" in opening["info"]):
            info = opening["info"].strip()
            language = info.split()[0].strip("{}").lstrip(".").lower() if info else ""
            current = Fence(number, len(opening["indent"].expandtabs(4)), language)
            found.append(current)
            fence = opening["fence"]
            close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        elif MARKER.match(text):
            markers.append(number)
    return found, markers


def logical_commands(lines: list[str], console: bool) -> list[tuple[int, int]]:
    """(first, last) line indexes of each command of a block: a line and the lines its trailing backslashes continue.
    In a console block whose lines start with ``$ `` only those lines (and their continuations) are commands."""
    commands: list[tuple[int, int]] = []
    prompted = console and any(line.startswith("$ ") or line == "$" for line in lines)
    i = 0
    while i < len(lines):
        first = i
        while lines[i].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
        if not prompted or lines[first].startswith("$"):
            commands.append((first, i))
        i += 1
    return commands


def comment_start(text: str) -> int:
    """Where the trailing shell comment of a command begins (len(text) if none): the first ``#`` outside quotes that
    starts a word."""
    quote = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote is None and char == "\\":
            i += 2
            continue
        if quote == '"' and char == "\\":
            i += 2
            continue
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        elif quote is None and char == "#" and (i == 0 or text[i - 1] in " \t\n"):
            return i
        i += 1
    return len(text)


def append_to_command(text: str, options: str) -> str:
    """The command with ``options`` at its end: before its trailing comment, if it has one."""
    cut = comment_start(text)
    before, comment = text[:cut], text[cut:]
    kept = before.rstrip()
    return f"{kept} {options}{before[len(kept) :]}{comment}"


def script_of(fence: Fence, appends: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The block's script with the appended options, and the prefixes that matched no command."""
    lines = list(fence.body)
    console = fence.language == "console"
    commands = logical_commands(lines, console)
    prompted = console and any(line.startswith("$ ") or line == "$" for line in lines)
    unmatched = []
    for prefix, options in appends:
        matched = False
        for first, last in commands:
            head = lines[first][1:] if prompted else lines[first]
            if head.lstrip().startswith(prefix):
                lines[last] = append_to_command(lines[last], options)
                matched = True
        if not matched:
            unmatched.append(prefix)
    if prompted:
        kept = []
        for first, last in commands:
            kept.append(lines[first][1:].lstrip(" "))
            kept.extend(lines[first + 1 : last + 1])
        lines = kept
    return "\n".join(lines) + "\n", unmatched


def parse_page(text: str, page: str) -> tuple[list[Block], list[str]]:
    """The shell blocks of one page with their markers, and every error as ``page:line: message``.

    A block with an error is left out of the blocks."""
    lines = text.splitlines()
    found, marker_lines = fences(lines)
    errors: list[str] = []
    blocks: list[Block] = []
    used_markers: set[int] = set()
    previous_runnable = False
    for fence in found:
        if not fence.closed:
            errors.append(f"{page}:{fence.line}: code fence never closed")
        marker_line = fence.line - 1
        marker = MARKER.match(lines[marker_line - 1]) if marker_line >= 1 else None
        if fence.language not in SHELL_LANGUAGES:
            continue
        if marker is None:
            hint = ""
            before = marker_line - 1
            while before >= 1 and not lines[before - 1].strip():
                before -= 1
            if before >= 1 and before < marker_line and MARKER.match(lines[before - 1]):
                hint = f" (the marker at line {before} is not on the line just before the fence)"
                used_markers.add(before)
            errors.append(
                f"{page}:{fence.line}: {fence.language} block without a doc-test marker on the line before its fence"
                f"{hint}: `<!-- doc-test: run -->` or `<!-- doc-test: skip: REASON -->`"
            )
            continue
        used_markers.add(marker_line)
        where = f"{page}:{marker_line}"
        source = "\n".join(fence.body) + "\n"
        clauses = split_clauses(marker["body"].strip())
        verb = clauses[0]
        skip = re.match(r"^skip\b\s*(?P<colon>:?)(?P<reason>.*)$", marker["body"].strip(), re.S)
        if skip:
            reason = skip["reason"].strip()
            if not skip["colon"] or not reason:
                errors.append(f"{where}: a skipped block needs its reason: `<!-- doc-test: skip: REASON -->`")
                continue
            blocks.append(Block(page, fence.line, fence.language, source, "skip", reason=reason))
            continue
        if verb != "run":
            errors.append(f"{where}: unknown doc-test verb {verb!r} (expected `run` or `skip: REASON`)")
            continue
        appends: list[tuple[str, str]] = []
        expects: list[str] = []
        after_previous = False
        bad = False
        for clause in clauses[1:]:
            if append := APPEND.match(clause):
                prefix, options = unquote(append[1]), unquote(append[2])
                if not prefix.strip() or not options.strip():
                    errors.append(f"{where}: append needs a non-empty prefix and options: {clause!r}")
                    bad = True
                appends.append((prefix.strip(), options.strip()))
            elif expect := EXPECT.match(clause):
                pattern = unquote(expect[1])
                try:
                    re.compile(pattern)
                except re.error as error:
                    errors.append(f"{where}: expect {pattern!r} is not a valid regular expression: {error}")
                    bad = True
                if not pattern:
                    errors.append(f"{where}: expect needs a non-empty regular expression")
                    bad = True
                expects.append(pattern)
            elif after := AFTER.match(clause):
                if after["what"].strip() != "previous":
                    errors.append(f"{where}: unknown after clause {clause!r} (only `after: previous`)")
                    bad = True
                elif not previous_runnable:
                    errors.append(f"{where}: `after: previous` but no runnable block comes before it on this page")
                    bad = True
                after_previous = True
            else:
                errors.append(
                    f'{where}: unknown clause {clause!r} (expected `append "PREFIX" "OPTIONS"`, '
                    '`after: previous` or `expect "REGEX"`)'
                )
                bad = True
        script, unmatched = script_of(fence, appends)
        for prefix in unmatched:
            errors.append(f"{where}: append prefix {prefix!r} starts no command of the block")
            bad = True
        if bad:
            continue
        blocks.append(
            Block(
                page,
                fence.line,
                fence.language,
                source,
                "run",
                script=script,
                appends=tuple(appends),
                expects=tuple(expects),
                after_previous=after_previous,
            )
        )
        previous_runnable = True
    for number in marker_lines:
        if number not in used_markers:
            errors.append(f"{page}:{number}: doc-test marker not on the line just before a shell block's fence")
    return blocks, sorted(errors, key=error_order)


def error_order(error: str) -> tuple[str, int]:
    page, line, _ = error.split(":", 2)
    return page, int(line)


def chains(blocks: list[Block]) -> list[list[Block]]:
    """The runnable blocks grouped into chains: a block with ``after: previous`` joins the chain of the runnable block
    before it on its page; every other runnable block starts a chain."""
    grouped: list[list[Block]] = []
    last_of_page: dict[str, list[Block]] = {}
    for block in blocks:
        if block.action != "run":
            continue
        if block.after_previous and block.page in last_of_page:
            last_of_page[block.page].append(block)
        else:
            chain = [block]
            grouped.append(chain)
            last_of_page[block.page] = chain
    return grouped


def page_name(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def documentation_pages(root: Path) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    pages = [root / "README.md"] if (root / "README.md").exists() else []
    return pages + sorted((root / "docs").rglob("*.md"))


def parse_pages(paths: list[Path], root: Path) -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    errors: list[str] = []
    for path in paths:
        found, wrong = parse_page(path.read_text(encoding="utf-8"), page_name(path, root))
        blocks += found
        errors += wrong
    return blocks, errors
