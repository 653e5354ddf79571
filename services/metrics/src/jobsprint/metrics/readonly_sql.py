"""The gate in front of analysts' SQL (`jobsprint-metrics sql`, `POST /v1/sql`).

One statement, and a reading one: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS. The
connection it then runs on is `readonly = 1` too, which refuses writes, DDL, setting changes
and table functions that reach outside the database; this check adds what `readonly` lets
through (several statements, `INTO OUTFILE`, the `Python()` table function that reads the
service's own memory under chDB) and a clear message instead of an engine error.

The scan is deliberately conservative: it skips string literals, quoted identifiers and
comments the way ClickHouse does, and when in doubt sees more tokens than the engine, so it
may refuse a strange but harmless query, never pass a harmful one.
"""

from __future__ import annotations

READING_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
# Table functions that read or write outside the database (files, network, processes, the
# Python process itself). `readonly = 1` refuses most of them; this list does not rely on it.
OUTSIDE_FUNCTIONS = frozenset(
    {
        "AZUREBLOBSTORAGE",
        "AZUREBLOBSTORAGECLUSTER",
        "CLUSTER",
        "CLUSTERALLREPLICAS",
        "DELTALAKE",
        "DICTIONARY",
        "EXECUTABLE",
        "FILE",
        "FILECLUSTER",
        "GCS",
        "HDFS",
        "HDFSCLUSTER",
        "HUDI",
        "ICEBERG",
        "INPUT",
        "JDBC",
        "MONGODB",
        "MYSQL",
        "ODBC",
        "POSTGRESQL",
        "PYTHON",
        "REDIS",
        "REMOTE",
        "REMOTESECURE",
        "S3",
        "S3CLUSTER",
        "SQLITE",
        "URL",
        "URLCLUSTER",
    }
)


class NotReadOnly(ValueError):
    """SQL this entry point refuses; the message says why."""


def check_read_only(sql: str) -> str:
    """The statement without a trailing `;`, or NotReadOnly."""
    tokens = _tokens(sql)
    while tokens and tokens[-1] == ";":
        tokens.pop()
    if not tokens:
        raise NotReadOnly("empty statement")
    if ";" in tokens:
        raise NotReadOnly("one statement at a time")
    first = tokens[0]
    if first not in READING_STATEMENTS:
        raise NotReadOnly(
            f"only reading statements are allowed ({', '.join(sorted(READING_STATEMENTS))}), "
            f"not {first}"
        )
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token == "INTO" and following == "OUTFILE":
            raise NotReadOnly("INTO OUTFILE is not allowed")
        if token in OUTSIDE_FUNCTIONS and following == "(":
            raise NotReadOnly(f"the table function {token.lower()}() is not allowed")
        previous = tokens[i - 1] if i else ""
        if token == "FORMAT" and following not in ("(", "") and previous != "AS":
            raise NotReadOnly("FORMAT is chosen by the caller (--format), not in the query")
    text = sql.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def _tokens(sql: str) -> list[str]:
    """Upper-cased words and single punctuation characters outside literals and comments."""
    tokens: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif char in "'\"`":
            i = _skip_quoted(sql, i)
            tokens.append("'")  # a literal or a quoted identifier
        elif char.isalnum() or char == "_":
            start = i
            while i < n and (sql[i].isalnum() or sql[i] == "_"):
                i += 1
            tokens.append(sql[start:i].upper())
        else:
            tokens.append(char)
            i += 1
    return tokens


def _skip_quoted(sql: str, start: int) -> int:
    """Index after the quoted literal starting at `start` (backslash escapes, doubled
    quotes); NotReadOnly when it is not closed."""
    quote = sql[start]
    i, n = start + 1, len(sql)
    while i < n:
        char = sql[i]
        if char == "\\":
            i += 2
        elif char == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise NotReadOnly(f"unclosed {quote} quote")
