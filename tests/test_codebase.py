"""Rules about the code itself that review alone would let slip.

All SQL lives in the `pixquery.catalog` package: one place to read when the schema changes, to
check that every statement is parameterised and runs inside the right transaction. This test reads
every module under src/pixquery with `ast` and fails on an SQL statement in a string (f-strings
included), an `.execute*()` call or an `import sqlite3` anywhere else.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "pixquery"
CATALOG = SRC / "catalog"

# SQL statements as SQL, not English: the keywords are upper case (as pixquery writes them) and
# each needs its statement's shape ("SELECT ... FROM", "INSERT INTO", "UPDATE x SET", ...), so a
# docstring saying "select the model" or "UPDATE" on its own does not match.
SQL = re.compile(
    r"\bSELECT\b[\s\S]+?\bFROM\b"
    r"|\bINSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\b"
    r"|\bREPLACE\s+INTO\b"
    r"|\bUPDATE\s+[\"\w]+\s+SET\b"
    r"|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(?:TEMP\s+|TEMPORARY\s+|UNIQUE\s+|VIRTUAL\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b"
    r"|\bDROP\s+(?:TABLE|INDEX|VIEW|TRIGGER)\b"
    r"|\bALTER\s+TABLE\b"
    r"|\bPRAGMA\s+\w+\s*(?:=|\(|;|$)"
    r"|\b(?:BEGIN|COMMIT|ROLLBACK)\s*(?:IMMEDIATE|EXCLUSIVE|TRANSACTION)?\s*;?\s*$"
)
EXECUTE = {"execute", "executemany", "executescript"}


def _strings(tree: ast.AST):
    """(line, text) of every string literal; an f-string's literal parts joined with a stand-in
    for each placeholder, so `f"SELECT {cols} FROM t"` reads as a statement."""
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str):
                    parts.append(v.value)
                    inside_fstring.add(id(v))
                else:
                    parts.append(" x ")
            yield node.lineno, "".join(parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstring:
            yield node.lineno, node.value


def sql_in(source: str, name: str = "<source>") -> list[str]:
    """Where `source` holds SQL: 'name:line: what' for each finding."""
    tree = ast.parse(source)
    found = []
    for line, text in _strings(tree):
        m = SQL.search(text)
        if m:
            found.append(f"{name}:{line}: SQL {m.group(0)[:40]!r}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EXECUTE:
            found.append(f"{name}:{node.lineno}: .{node.func.attr}() call")
        if isinstance(node, ast.Import) and any(a.name == "sqlite3" for a in node.names):
            found.append(f"{name}:{node.lineno}: import sqlite3")
        if isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            found.append(f"{name}:{node.lineno}: from sqlite3 import")
    return found


def test_no_module_outside_the_catalog_package_holds_sql():
    modules = [p for p in SRC.rglob("*.py") if CATALOG not in p.parents]
    assert len(modules) > 30  # the walk really found the package
    findings = [f for p in modules for f in sql_in(p.read_text(), str(p.relative_to(SRC.parent)))]
    assert findings == [], "SQL outside src/pixquery/catalog (move it into a Catalog method):\n" + "\n".join(findings)


def test_the_sql_detector_finds_the_catalogs_statements_and_ignores_english():
    # It finds SQL where SQL is: each catalog module that talks to SQLite, in every form used there.
    store = sql_in((CATALOG / "store.py").read_text())
    assert any("SQL" in f for f in store) and any(".execute() call" in f for f in store)
    planted = """
import sqlite3
Q = f"SELECT {', '.join(cols)} FROM image WHERE id = ?"
def f(db, ids):
    db.execute("DELETE FROM image WHERE id IN (%s)" % ids)
    db.executemany("INSERT OR IGNORE INTO tag(name) VALUES (?)", ids)
    return "UPDATE image SET deleted = 1", "CREATE UNIQUE INDEX i ON t(x)", "PRAGMA user_version"
"""
    found = sql_in(planted)
    assert len([f for f in found if ": SQL " in f]) == 6, found
    assert sum(".execute" in f for f in found) == 2 and any("import sqlite3" in f for f in found)
    english = '''
"""Select the model, then delete from the library what is gone; update the index.

Create an index from the stored vectors (select from the list). PRAGMA is explained in catalog/.
"""
HELP = "Files to delete from the library; select one with --select"
'''
    assert sql_in(english) == []
