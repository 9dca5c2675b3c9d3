"""SQL is built only from prepared statements (issue 11): every SQL text in
the C sources is a literal with `?` placeholders; the only printf-built SQL
fills in a table name from a fixed list, never a value. A static scan, so it
fails as soon as someone formats a value into SQL."""
import glob
import os
import re

from reliability_helpers import record

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SQL = re.compile(r"\b(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WHERE)\b")
PRINTF = re.compile(r"\b(v?s?n?printf|asprintf|hn_sb_printf|\w*_printf)\s*\(")
# identifiers a printf-built statement may fill in: names of tables chosen by
# the code itself (plugins/broker/styles.c: styles or collections;
# plugins/storage-sqlite/shared/storage_migrate.c: m->table, the provider's
# constant version table)
ALLOWED_ARGS = {"table"}


def _sources():
    for pattern in ("core/*.c", "plugins/*/*.c", "plugins/*/*/*.c"):
        for path in glob.glob(os.path.join(ROOT, pattern)):
            if "/tests/" not in path and "/bench/" not in path:
                yield path


def _call_text(src, start):
    """The text of the call that opens at src[start] == '(' (strings skipped)."""
    depth, i, in_str = 0, start, False
    while i < len(src):
        c = src[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return src[start:i + 1]
        i += 1
    return src[start:]


def _split_args(call):
    """Top-level arguments of "(a, b, ...)" (strings and nested parens kept whole)."""
    args, depth, cur, in_str, i = [], 0, "", False, 1
    body = call[1:-1] if call.endswith(")") else call[1:]
    while i <= len(body):
        c = body[i - 1] if i - 1 < len(body) else ","
        if in_str:
            cur += c
            if c == "\\":
                cur += body[i] if i < len(body) else ""
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            cur += c
        elif c in "([{":
            depth += 1
            cur += c
        elif c in ")]}":
            depth -= 1
            cur += c
        elif c == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    if cur.strip():
        args.append(cur.strip())
    return args


LITERAL = r'(?:"(?:[^"\\]|\\.)*"\s*)+'
# a ternary choosing between two literal SQL fragments (with their own `?`)
LITERAL_CHOICE = re.compile(r"[^\"]*\?\s*" + LITERAL + r":\s*" + LITERAL, re.S)


def _safe(arg):
    field = re.sub(r"^[A-Za-z_]\w*(?:->|\.)", "", arg)  # m->table, m.table: the field's name
    return field in ALLOWED_ARGS or LITERAL_CHOICE.fullmatch(arg) is not None


def test_sql_values_are_always_bound():
    formatted, literals, files = [], 0, 0
    for path in _sources():
        src = open(path, errors="replace").read()
        files += 1
        literals += len([s for s in re.findall(r'"((?:[^"\\]|\\.)*)"', src)
                         if SQL.search(s) and ("?" in s or "$" in s)])
        for m in PRINTF.finditer(src):
            args = _split_args(_call_text(src, m.end() - 1))
            fmt_at = next((i for i, a in enumerate(args) if a.startswith('"')), None)
            if fmt_at is None:
                continue
            fmt = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', args[fmt_at]))
            if not SQL.search(fmt) or not re.search(r"%[-0-9.]*[a-zA-Z]", fmt):
                continue
            rest = args[fmt_at + 1:]
            formatted.append((os.path.relpath(path, ROOT), fmt[:80], rest))
    bad = [f for f in formatted if not all(_safe(a) for a in f[2])]
    record("SQL text in %d C files scanned for values formatted into SQL" % files, literals,
           "%d statements with bound placeholders; %d built with printf, each filling in a"
           " fixed table name or literal clauses; values formatted into SQL: %d"
           % (literals, len(formatted), len(bad)), not bad)
    assert literals > 20
    assert formatted, "the scan found no printf-built SQL at all: is it still working?"
    assert not bad, bad
