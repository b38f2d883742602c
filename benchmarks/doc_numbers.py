"""Measured numbers in the pages' prose, each rendered from the committed file it came from (issue 36), so that none
is typed by hand.

    python reports/regenerate.py --only doc-numbers    # rewrites every region of every page; reads JSON only

A region is one number in a page, between a marker that says where it comes from and ``<!-- /from -->``:

    at 2 x 8192 tokens (<!-- from: benchmarks/results/sp.json; runs.1.peak / runs.0.peak; .2f -->0.75<!-- /from -->x)

    <!-- from: SOURCES; EXPRESSION -->VALUE<!-- /from -->
    <!-- from: SOURCES; EXPRESSION; FORMAT -->VALUE<!-- /from -->

- SOURCES: a JSON file, its path from the repository root; or several, each ``NAME=PATH`` (separated by spaces).
- EXPRESSION: a key path into the file, ``runs.1.peak_gib`` (keys separated by ``.``; a list's index is a number; a
  key with spaces, dots, commas or parentheses in double quotes: ``cases."vocab 128256, 256-512 words".summary``).
  With several sources a path starts with the source's NAME (``a.runs.1.peak_gib``). Paths, numbers, ``+ - * /
  **`` (with spaces around them: ``-`` inside a path is part of a key such as ``amapo-amapo``), parentheses and
  ``min(...)``, ``max(...)``, ``abs(...)`` combine them; nothing else is evaluated.
- FORMAT: a Python format spec (``.2f``, ``,.0f``, ``.0%``) applied to the exact decimal value (JSON numbers are
  read as decimals; ties round half up, so 273 s / 60 is 4.6 min); without it the value as the file has it.
- VALUE: what the marker renders; the rest of the sentence (units, ``x``) stays outside and is written by hand.

A region is on one line (its marker's own text may wrap), and never starts a line: Markdown would take a line that
starts with ``<!--`` for an HTML block and cut the paragraph there. ``tests/test_doc_numbers.py`` fails when a region is
not what its marker renders from the committed files (a hand edit, or a result file regenerated without the pages),
or when a marker names a file or key that does not exist. The speed headline (``benchmarks/headline.py``) and the
README's default-run table (``reports/regenerate.py``) are whole rendered blocks of the same kind.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
END = "<!-- /from -->"
START = "<!-- from:"
# the marker's text (may wrap lines, never contains -->), then the value (one line, no markup)
REGION = re.compile(r"<!-- from:(?P<spec>(?:(?!-->).)*?)-->(?P<value>[^<\n]*?)" + re.escape(END), re.S)
TOKEN = re.compile(r'\s*(?:(?P<punct>[(),])|(?P<word>(?:"[^"]*"|[^\s"(),])+))')
NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
OPERATORS = {"+", "-", "*", "/", "**"}
FUNCTIONS = {"min": min, "max": max, "abs": abs}
BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
          ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a**b}  # fmt: skip


class MarkerError(ValueError):
    """A marker that cannot be rendered: its grammar, a missing file or key, a value that is not a number."""


def pages(root: Path = ROOT) -> list[str]:
    """The pages that may hold regions: the landing README, BENCHMARKS.md and every docs page."""
    found = [root / "README.md", root / "BENCHMARKS.md", *sorted((root / "docs").rglob("*.md"))]
    return [str(path.relative_to(root)) for path in found if path.exists()]


def split_clauses(spec: str) -> list[str]:
    """The marker's clauses: split at every ``;`` outside double quotes."""
    clauses, current, quoted = [], [], False
    for char in spec:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            clauses.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    clauses.append("".join(current).strip())
    return clauses


@cache
def read_json(path: Path, mtime_ns: int) -> object:  # mtime_ns: a rewritten file is read again
    return json.loads(path.read_text(), parse_float=Decimal, parse_int=Decimal)


def load(root: Path, file: str) -> object:
    path = root / file
    if not file.endswith(".json"):
        raise MarkerError(f"{file}: a source is a JSON file")
    if not path.is_file():
        raise MarkerError(f"{file}: no such file")
    try:
        return read_json(path, path.stat().st_mtime_ns)
    except json.JSONDecodeError as error:
        raise MarkerError(f"{file}: not JSON ({error})") from None


def sources(clause: str) -> dict[str, str]:
    """``PATH`` -> {"": PATH}; ``a=PATH b=PATH`` -> {"a": PATH, "b": PATH}."""
    words = clause.split()
    if not words:
        raise MarkerError("no source file")
    if len(words) == 1 and "=" not in words[0]:
        return {"": words[0]}
    named = dict(word.split("=", 1) if "=" in word else ("", word) for word in words)
    if "" in named or len(named) != len(words) or not all(name.isidentifier() for name in named):
        raise MarkerError(f"several sources need a distinct NAME=PATH each: {clause!r}")
    return named


def keys(path: str) -> list[str]:
    """``cases."a b".summary`` -> ["cases", "a b", "summary"]."""
    parts = re.findall(r'"([^"]*)"|([^.]+)', path)
    rebuilt = ".".join(f'"{quoted}"' if quoted or not plain else plain for quoted, plain in parts)
    if not parts or rebuilt != path:
        raise MarkerError(f"not a key path: {path!r}")
    return [quoted or plain for quoted, plain in parts]


def lookup(data: object, path: list[str], where: str) -> object:
    for depth, key in enumerate(path):
        seen = ".".join(path[: depth + 1])
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            raise MarkerError(f"{where}: no key {seen}")
    return data


def evaluate(expression: str, files: dict[str, str], root: Path = ROOT) -> object:
    """The expression's value: its key paths looked up in the files, combined exactly (decimals)."""
    tokens, position = [], 0
    while expression[position:].strip():
        m = TOKEN.match(expression, position)
        if not m:
            raise MarkerError(f"cannot read the expression {expression!r} (an unclosed quote?)")
        tokens.append(m.group("punct") or m.group("word"))
        position = m.end()
    python, values = [], {}
    for i, token in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in OPERATORS or token in "()," or (token in FUNCTIONS and after == "("):
            python.append(token)
        elif NUMBER.match(token):
            python.append(f"Decimal('{token}')")
        else:
            path = keys(token)
            name = path.pop(0) if "" not in files else ""
            if name not in files:
                raise MarkerError(f"{token}: starts with none of the sources' names ({', '.join(files)})")
            if not path:
                raise MarkerError(f"{token}: a path needs a key after the source's name")
            placeholder = f"_{len(values)}"
            values[placeholder] = lookup(load(root, files[name]), path, files[name])
            python.append(placeholder)
    try:
        tree = ast.parse(" ".join(python), mode="eval").body
    except SyntaxError:
        raise MarkerError(f"not an expression: {expression!r}") from None
    if isinstance(tree, ast.Name):
        return values[tree.id]  # one path: the value itself, number or not
    return compute(tree, values, expression)


def compute(node: ast.AST, values: dict[str, object], expression: str) -> Decimal:
    def number(value: object) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, Decimal):
            raise MarkerError(f"{expression!r}: {value!r} is not a number")
        return value

    match node:
        case ast.Name(id=name) if name in values:
            return number(values[name])
        case ast.Call(func=ast.Name(id="Decimal"), args=[ast.Constant(value=str(text))]):
            return Decimal(text)
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in FUNCTIONS and args:
            return FUNCTIONS[name](*(compute(arg, values, expression) for arg in args))
        case ast.BinOp(left=left, op=op, right=right) if type(op) in BINARY:
            return BINARY[type(op)](compute(left, values, expression), compute(right, values, expression))
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -compute(operand, values, expression)
    raise MarkerError(f"{expression!r}: only paths, numbers, + - * / **, parentheses, min, max and abs")


def render(spec: str, root: Path = ROOT) -> str:
    """The value a marker's text (what follows ``from:``) renders."""
    clauses = split_clauses(" ".join(spec.split()))
    if len(clauses) not in (2, 3) or not clauses[1]:
        raise MarkerError("a marker is 'from: SOURCES; EXPRESSION' or 'from: SOURCES; EXPRESSION; FORMAT'")
    value = evaluate(clauses[1], sources(clauses[0]), root)
    if isinstance(value, dict | list) or value is None:
        raise MarkerError(f"{clauses[1]}: is not one value")
    form = clauses[2] if len(clauses) == 3 else ""
    with localcontext() as context:
        context.rounding = ROUND_HALF_UP
        try:
            return format(value, form) if form else str(value)
        except ValueError as error:
            raise MarkerError(f"format {form!r}: {error}") from None


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def rendered(text: str, root: Path = ROOT, page: str = "") -> tuple[str, list[str]]:
    """The page's text with every region rendered, and the problems found (each ``page:line: what``)."""
    errors = []
    found = list(REGION.finditer(text))
    covered = [(m.start(), m.end()) for m in found]
    for marker in (START, END):
        for m in re.finditer(re.escape(marker), text):
            if not any(start <= m.start() < end for start, end in covered):
                errors.append(f"{page}:{line_of(text, m.start())}: {marker} without its pair on one line")
    for m in found:
        if not text[text.rfind("\n", 0, m.start()) + 1 : m.start()].strip():
            errors.append(f"{page}:{line_of(text, m.start())}: a marker starts its line, which would make the line an "
                          "HTML block outside the paragraph: put a word before it")  # fmt: skip

    def one(m: re.Match) -> str:
        try:
            value = render(m.group("spec"), root)
        except MarkerError as error:
            errors.append(f"{page}:{line_of(text, m.start())}: {error}")
            return m.group(0)
        return m.group(0)[: m.start("value") - m.start()] + value + END

    text = REGION.sub(one, text)
    return text, sorted(errors, key=lambda error: int(error[len(page) + 1 :].split(":", 1)[0]))


def regions(text: str) -> list[tuple[int, str, str]]:
    """Each region of a page: its line, its marker's text and the value the page shows."""
    return [
        (line_of(text, m.start()), " ".join(m.group("spec").split()), m.group("value")) for m in REGION.finditer(text)
    ]


def write(root: Path = ROOT) -> list[str]:
    """Rewrite every region of every page; the pages rewritten. A marker that cannot render stops everything."""
    new = {}
    for page in pages(root):
        text = (root / page).read_text()
        new[page], errors = rendered(text, root, page)
        if errors:
            raise SystemExit("\n".join(errors))
    changed = [page for page, text in new.items() if text != (root / page).read_text()]
    for page in changed:
        (root / page).write_text(new[page])
    return changed


if __name__ == "__main__":
    print(f"rewrote the numbers of {', '.join(write()) or 'no page (all were current)'}", file=sys.stderr)
