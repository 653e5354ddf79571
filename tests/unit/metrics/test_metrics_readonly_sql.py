"""The analysts' SQL gate: one reading statement, nothing that writes or reaches outside."""

from __future__ import annotations

import pytest

from jobsprint.metrics.readonly_sql import NotReadOnly, check_read_only

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select count() from executions FINAL;",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "SHOW TABLES",
        "DESCRIBE TABLE executions",
        "desc steps",
        "EXPLAIN SELECT 1",
        "SELECT 'a; DROP TABLE x' AS s",
        "SELECT 1 -- ; DROP TABLE x",
        "SELECT /* ; INSERT */ 1",
        "SELECT x AS format FROM t",
        "SELECT formatReadableSize(1)",
        "SELECT 'it''s', \"col;umn\", `we;ird` FROM t",
    ],
)
def test_reading_statements_pass(sql: str) -> None:
    assert check_read_only(sql)


def test_the_trailing_semicolon_is_dropped() -> None:
    assert check_read_only("  SELECT 1 ;; ") == "SELECT 1"


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "empty"),
        ("   ;", "empty"),
        ("-- only a comment", "empty"),
        ("INSERT INTO executions VALUES (1)", "not INSERT"),
        ("DROP TABLE executions", "not DROP"),
        ("ALTER TABLE executions DELETE WHERE 1", "not ALTER"),
        ("CREATE TABLE t (a Int8) ENGINE = Memory", "not CREATE"),
        ("TRUNCATE TABLE checkpoints", "not TRUNCATE"),
        ("OPTIMIZE TABLE executions FINAL", "not OPTIMIZE"),
        ("SET readonly = 0", "not SET"),
        ("KILL QUERY WHERE 1", "not KILL"),
        ("SYSTEM STOP MERGES", "not SYSTEM"),
        ("SELECT 1; DROP TABLE executions", "one statement"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELECT 1 INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file()"),
        ("SELECT * FROM url('http://169.254.169.254/', 'LineAsString')", "url()"),
        ("SELECT * FROM Python(settings)", "python()"),
        ("SELECT * FROM s3('https://x/y', 'CSV')", "s3()"),
        ("SELECT * FROM remote('10.0.0.1', system.one)", "remote()"),
        ("SELECT file('/etc/passwd')", "file()"),
        ("SELECT 1 FORMAT JSON", "FORMAT"),
        ("SELECT '1'; /* */ DROP TABLE x", "one statement"),
        ("SELECT 'unclosed; DROP TABLE x", "unclosed"),
    ],
)
def test_everything_else_is_refused_with_a_reason(sql: str, reason: str) -> None:
    with pytest.raises(NotReadOnly) as caught:
        check_read_only(sql)
    assert reason in str(caught.value)
