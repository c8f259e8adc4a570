"""The shell and SQL tokenizers: where evasions are won or lost.

These pin the structure the classifier relies on (what counts as a separate
command, which words came from expansions, what a heredoc feeds) independently of
any tool's verdict.
"""

from __future__ import annotations

import pytest

from agent_shim.risk.model import is_dynamic
from agent_shim.risk.shellparse import ParseError, Script, parse
from agent_shim.risk.sqllex import SqlParseError, split_statements


def _commands(script: Script) -> list[list[str]]:
    return [list(c.words) for p in script.pipelines for c in p]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a && b || c; d & e | f", [["a"], ["b"], ["c"], ["d"], ["e"], ["f"]]),
        ("echo 'a;b' \"c|d\"", [["echo", "a;b", "c|d"]]),
        ("r\\m -rf /", [["rm", "-rf", "/"]]),
        ("$'\\x72\\x6d' -rf /", [["rm", "-rf", "/"]]),
        ("$'\\162\\155' x", [["rm", "x"]]),
        ("ls \\\n  -la", [["ls", "-la"]]),
        ("echo a # rm -rf /", [["echo", "a"]]),
        ("echo a#b", [["echo", "a#b"]]),
        ("FOO=1 BAR=2 cmd arg", [["FOO=1", "BAR=2", "cmd", "arg"]]),
        ("[[ a > b ]] && ls", [["[[", "a", ">", "b", "]]"], ["ls"]]),
        ("case $x in start) go ;; stop) halt ;; esac", [["go"], ["halt"], ["esac"]]),
        ("f() { rm -rf /; }", [["{", "rm", "-rf", "/"], ["}"]]),
    ],
)
def test_splits_commands(text: str, expected: list[list[str]]) -> None:
    assert _commands(parse(text)) == expected


def test_pipeline_structure() -> None:
    script = parse("curl x | sh && ls |& grep y")
    assert [[c.words[0] for c in p] for p in script.pipelines] == [["curl", "sh"], ["ls", "grep"]]


@pytest.mark.parametrize(
    "text",
    ["echo $(rm -rf /)", "echo \"$(rm -rf /)\"", "echo `rm -rf /`", "echo \"`rm -rf /`\"",
     "echo ${X:-$(rm -rf /)}", "cat <(rm -rf /)", "tee >(rm -rf /)", "x=$(rm -rf /)",
     "echo $((1 + $(rm -rf /)))"],
)
def test_substitutions_are_found_everywhere(text: str) -> None:
    subs = parse(text).subs
    assert subs, text
    assert _commands(subs[0])[0][0] == "rm"


def test_nested_substitutions() -> None:
    outer = parse("echo $(echo $(reboot))").subs[0]
    assert _commands(outer.subs[0]) == [["reboot"]]


def test_dynamic_marks() -> None:
    words = _commands(parse("cmd $X \"$Y\" '$Z' *.py {a,b} plain"))[0]
    assert [is_dynamic(w) for w in words] == [False, True, True, False, True, True, False]


def test_heredocs_feed_the_command() -> None:
    script = parse("psql <<'EOF'\nDROP TABLE x;\nEOF\nls")
    first = script.pipelines[0][0]
    assert first.redirects[0].body == "DROP TABLE x;\n"
    assert not first.redirects[0].dynamic_body
    assert _commands(script)[-1] == ["ls"]


def test_unquoted_heredoc_is_expanded() -> None:
    script = parse("cat <<EOF\n$(reboot) $HOME\nEOF")
    assert script.pipelines[0][0].redirects[0].dynamic_body
    assert _commands(script.subs[0]) == [["reboot"]]


def test_tab_stripping_heredoc() -> None:
    script = parse("cat <<-END\n\tline\n\tEND\necho after")
    assert script.pipelines[0][0].redirects[0].body == "line\n"
    assert _commands(script)[-1] == ["echo", "after"]


def test_redirects() -> None:
    cmd = parse("cmd > out 2>&1 >> log < in &> all").pipelines[0][0]
    assert [(r.fd, r.op, r.target) for r in cmd.redirects] == [
        ("", ">", "out"), ("2", ">&", "1"), ("", ">>", "log"), ("", "<", "in"), ("", "&>", "all")
    ]


def test_subshell_and_group() -> None:
    script = parse("(cd /srv && rm -rf app) > log")
    cmd = script.pipelines[0][0]
    assert cmd.group is not None
    assert _commands(cmd.group) == [["cd", "/srv"], ["rm", "-rf", "app"]]


@pytest.mark.parametrize(
    "text", ["echo 'x", "echo \"x", "echo $(ls", "echo `ls", "(ls", "echo ${x", "a >", "echo $'x"]
)
def test_unbalanced_input_is_refused(text: str) -> None:
    with pytest.raises(ParseError):
        parse(text)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ParseError):
        parse("$(" * 200 + "ls" + ")" * 200)


def test_sql_split_respects_quotes_and_comments() -> None:
    stmts = split_statements("SELECT ';'; -- x; DROP\nSELECT 2 /* ; */; DELETE FROM t", False)
    heads = [s[0].text.upper() for s in stmts]
    assert heads == ["SELECT", "SELECT", "DELETE"]


def test_sql_dialects_disagree_on_backslashes() -> None:
    text = "SELECT 'a\\'; DROP TABLE t; --'"
    assert [s[0].text.upper() for s in split_statements(text, False)] == ["SELECT", "DROP"]
    assert [s[0].text.upper() for s in split_statements(text, True)] == ["SELECT"]


def test_mysql_executable_comments_are_code() -> None:
    stmts = split_statements("SELECT 1; /*!50000 DROP TABLE t */", True)
    assert [s[0].text.upper() for s in stmts] == ["SELECT", "DROP"]


def test_sql_meta_commands() -> None:
    stmts = split_statements("\\dt\nSELECT 1 \\gexec", False)
    assert stmts[0][0].kind == "meta"
    assert stmts[-1][0].text == "\\gexec"


def test_sql_unterminated() -> None:
    with pytest.raises(SqlParseError):
        split_statements("SELECT 'x", False)
