"""Policy models, the TOML format, the built-ins, evaluation and the rate window.

Table-driven: each case is one line an SRE could read as a claim about what
towerctl does with a policy.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agent_shim.policy import (
    STRICTEST,
    EnvPolicy,
    Evaluation,
    PolicyDoc,
    PolicyError,
    RateWindow,
    Rule,
    default_policies,
    dump_policy_toml,
    evaluate,
    format_duration,
    parse_duration,
    parse_policy_toml,
    policy_for,
)
from agent_shim.ratelimit import MAX_TRACKED
from agent_shim.types import KINDS, RISKS, VERDICTS, Kind, Risk, Verdict

DESIGN_EXAMPLE = """\
[environments.prod]
read = "allow"            # verdict per risk class
write = "ask"
destructive = "ask"
approval_timeout = "5m"   # then denied
max_actions_per_minute = 30   # beyond it the session is paused and operators alerted

[[environments.prod.rules]]   # first match wins, before the risk defaults
kind = "shell"
match = "terraform destroy*"
verdict = "deny"
reason = "prod is never destroyed by an agent"
"""


def _env_toml(body: str, env: str = "prod") -> str:
    return f"[environments.{env}]\n{body}\n"


def _rule_toml(body: str) -> str:
    return f'[environments.prod]\n\n[[environments.prod.rules]]\nmatch = "x"\n{body}\n'


# ------------------------------------------------------------------- parsing


def test_design_example_parses_exactly() -> None:
    assert parse_policy_toml(DESIGN_EXAMPLE) == PolicyDoc(
        environments={
            "prod": EnvPolicy(
                read="allow",
                write="ask",
                destructive="ask",
                approval_timeout_s=300,
                max_actions_per_minute=30,
                rules=(
                    Rule(
                        kind="shell",
                        match="terraform destroy*",
                        verdict="deny",
                        reason="prod is never destroyed by an agent",
                    ),
                ),
            )
        }
    )


def test_missing_keys_take_model_defaults_not_builtins() -> None:
    # A configured environment replaces the built-in: what the file says is all there is.
    doc = parse_policy_toml("[environments.prod]\n")
    assert doc.environments["prod"] == EnvPolicy()
    assert doc.environments["prod"].max_actions_per_minute is None


@pytest.mark.parametrize("text", ["", "# nothing configured\n", "[environments]\n"])
def test_empty_policy_is_empty_doc(text: str) -> None:
    assert parse_policy_toml(text) == PolicyDoc(environments={})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ('"30s"', 30),
        ('"5m"', 300),
        ('"1h"', 3600),
        ('"1h30m"', 5400),
        ('"1m30s"', 90),
        ('"1h0m0s"', 3600),
        ('"24h"', 86_400),
        ("90", 90),
        ("1", 1),
        ("86400", 86_400),
    ],
)
def test_durations(value: str, seconds: int) -> None:
    doc = parse_policy_toml(_env_toml(f"approval_timeout = {value}"))
    assert doc.environments["prod"].approval_timeout_s == seconds


@pytest.mark.parametrize(
    "value",
    [
        '"5x"',
        '""',
        '"0s"',
        "-1",
        "0",
        '"90"',  # a bare number in a string: seconds or minutes? refuse to guess
        '"5M"',
        '"1.5h"',
        '" 5m"',
        '"30s5m"',
        '"1h1h"',
        '"25h"',
        '"-5m"',
        "86401",
        "1.5",
        "true",
        "[300]",
    ],
)
def test_bad_durations_rejected(value: str) -> None:
    with pytest.raises(PolicyError, match="approval_timeout") as info:
        parse_policy_toml(_env_toml(f"approval_timeout = {value}"))
    assert info.value.env == "prod"
    assert info.value.key == "approval_timeout"
    assert info.value.line == 2


@given(st.integers(min_value=1, max_value=86_400))
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (_env_toml('reed = "allow"'), ["'reed'", "environments.prod", "did you mean 'read'"]),
        (
            _env_toml("approval_timeout_s = 300"),
            ["'approval_timeout_s'", "did you mean 'approval_timeout'"],
        ),
        (_env_toml("max_actions = 3", env="dev"), ["'max_actions'", "environments.dev"]),
        (_rule_toml('verdict = "deny"\ncomment = "x"'), ["'comment'", "rule 1", "prod"]),
        (_rule_toml('verdict = "deny"\npattern = "x"'), ["'pattern'", "rule 1"]),
        ('[prod]\nread = "allow"\n', ["unknown top-level key 'prod'", "line 1"]),
        ("version = 2\n", ["unknown top-level key 'version'"]),
        ('[environments.eu.prod]\nread = "allow"\n', ["unknown key 'prod'", "quote"]),
        ("environments.prod.foo = 1\n", ["unknown key 'foo'", "environments.prod"]),
        ('[environments]\nprod = { read = "allow", bogus = 2 }\n', ["unknown key 'bogus'"]),
    ],
)
def test_unknown_keys_rejected_by_name(text: str, fragments: list[str]) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_toml(text)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (_env_toml("read = 1"), "read"),
        (_env_toml("write = true"), "write"),
        (_env_toml('destructive = ["deny"]'), "destructive"),
        (_env_toml("approval_timeout = 1.5"), "approval_timeout"),
        (_env_toml('max_actions_per_minute = "30"'), "max_actions_per_minute"),
        (_env_toml("max_actions_per_minute = true"), "max_actions_per_minute"),
        (_env_toml("max_actions_per_minute = 0"), "max_actions_per_minute"),
        (_env_toml("max_actions_per_minute = 2.5"), "max_actions_per_minute"),
        (_env_toml("rules = 3"), "rules"),
        (_env_toml('rules = ["deny everything"]'), None),
        (_rule_toml('verdict = "deny"\nkind = "docker"'), "kind"),
        (_rule_toml('verdict = "deny"\nkind = 1'), "kind"),
        (_rule_toml('verdict = "deny"\nrisk = "high"'), "risk"),
        (_rule_toml('verdict = "deny"\nrisk = "*"'), "risk"),
        (_rule_toml('verdict = "deny"\nreason = 2'), "reason"),
        (_rule_toml('verdict = "deny"').replace('match = "x"', "match = 1"), "match"),
    ],
)
def test_wrong_types_rejected(text: str, key: str | None) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_toml(text)
    assert info.value.env == "prod"
    assert info.value.key == key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (_env_toml('read = "yes"'), "read"),
        (_env_toml('write = "Allow"'), "write"),
        (_env_toml('destructive = ""'), "destructive"),
        (_rule_toml('verdict = "block"'), "verdict"),
        (_rule_toml('verdict = "DENY"'), "verdict"),
    ],
)
def test_bad_verdicts_rejected(text: str, key: str) -> None:
    with pytest.raises(PolicyError, match='must be one of "allow", "ask", "deny"') as info:
        parse_policy_toml(text)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[environments.prod]\n[[environments.prod.rules]]\nverdict = "deny"\n', "'match'"),
        ('[environments.prod]\n[[environments.prod.rules]]\nmatch = "x"\n', "'verdict'"),
        (_rule_toml('verdict = "deny"').replace('match = "x"', 'match = "   "'), "blank"),
        (_rule_toml('verdict = "deny"\nreason = "a\\u001b[2Jb"'), "U+001B"),
        (_rule_toml('verdict = "deny"\nreason = "line\\nbreak"'), "U+000A"),
        (_rule_toml('verdict = "deny"\nreason = "abc\\u202edcba"'), "U+202E"),
        (_rule_toml('verdict = "deny"').replace('"x"', '"rm\\u0007"'), "U+0007"),
        ("environments = 1\n", "must be a table"),
        ('[environments]\nprod = "strict"\n', "must be a table"),
        ('[environments."a b"]\n', "environment names"),
        (f"[environments.{'a' * 65}]\n", "environment names"),
        ('[environments."ünï"]\n', "environment names"),
        ('[environments.""]\n', "environment names"),
        ("[environments.prod\n", "not valid TOML"),
    ],
)
def test_invalid_policies_rejected(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_toml(text)
    assert fragment in str(info.value)


def test_error_names_the_line() -> None:
    text = DESIGN_EXAMPLE + '\n[[environments.prod.rules]]\nmatch = "x"\nverdict = "nope"\n'
    with pytest.raises(PolicyError) as info:
        parse_policy_toml(text)
    assert info.value.line == 16
    assert str(info.value).startswith("environments.prod, rule 2, key 'verdict' (line 16):")


def test_toml_syntax_error_carries_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_toml('[environments.prod]\nread = "allow"\nwrite = \n')
    assert info.value.line == 3


@pytest.mark.parametrize("name", ["eu.prod", "a" * 64, "prod-2", "A_b.c-d", "7"])
def test_env_names_accepted(name: str) -> None:
    doc = parse_policy_toml(f'[environments."{name}"]\nread = "ask"\n')
    assert doc.environments[name].read == "ask"


def test_match_whitespace_is_normalised() -> None:
    # Commands are compared with whitespace collapsed; a pattern with a double
    # space or a tab would otherwise be a deny rule that never fires.
    doc = parse_policy_toml(_rule_toml('verdict = "deny"').replace('"x"', '" a \\t  b*  "'))
    assert doc.environments["prod"].rules[0].match == "a b*"


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    "doc",
    [
        PolicyDoc(environments={}),
        default_policies(),
        parse_policy_toml(DESIGN_EXAMPLE),
        PolicyDoc(
            environments={
                "eu.prod": EnvPolicy(
                    approval_timeout_s=3661,
                    rules=(
                        Rule(match='say "hi" \\ [x]*', verdict="ask", risk="write", kind="tool"),
                        Rule(match="*", verdict="deny", reason='it\'s "quoted" \\ and ünïcödé'),
                    ),
                ),
                "x": STRICTEST,
            }
        ),
    ],
)
def test_dump_parse_round_trip(doc: PolicyDoc) -> None:
    text = dump_policy_toml(doc)
    assert parse_policy_toml(text) == doc
    assert dump_policy_toml(parse_policy_toml(text)) == text


_SAFE_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Zl", "Zp"))
_rules = st.builds(
    Rule,
    kind=st.sampled_from(("*", *KINDS)),
    match=st.text(_SAFE_CHARS, min_size=1, max_size=40).filter(lambda s: bool(s.split())),
    risk=st.none() | st.sampled_from(RISKS),
    verdict=st.sampled_from(VERDICTS),
    reason=st.text(_SAFE_CHARS, max_size=40),
)
_envs = st.builds(
    EnvPolicy,
    read=st.sampled_from(VERDICTS),
    write=st.sampled_from(VERDICTS),
    destructive=st.sampled_from(VERDICTS),
    approval_timeout_s=st.integers(1, 86_400),
    max_actions_per_minute=st.none() | st.integers(1, 10**9),
    rules=st.lists(_rules, max_size=4).map(tuple),
)
_docs = st.builds(
    PolicyDoc,
    environments=st.dictionaries(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), _envs, max_size=4),
)


@given(_docs)
def test_generated_docs_round_trip(doc: PolicyDoc) -> None:
    assert parse_policy_toml(dump_policy_toml(doc)) == doc


@given(_docs)
def test_generated_docs_survive_the_wire(doc: PolicyDoc) -> None:
    assert PolicyDoc.model_validate_json(doc.model_dump_json()) == doc


# -------------------------------------------------------------------- models


@pytest.mark.parametrize(
    "fields",
    [
        {"approval_timeout_s": 0},
        {"approval_timeout_s": 86_401},
        {"approval_timeout_s": True},
        {"max_actions_per_minute": 0},
        {"read": "maybe"},
        {"rules": [Rule(match="x", verdict="deny")]},  # strict: a list is not a tuple
        {"unknown": 1},
    ],
)
def test_env_policy_is_strict(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EnvPolicy.model_validate(fields)


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        STRICTEST.read = "allow"


def test_doc_rejects_bad_env_names_over_the_wire() -> None:
    with pytest.raises(ValidationError, match="environment name"):
        PolicyDoc.model_validate_json('{"environments": {"a/b": {}}}')


# ------------------------------------------------------------------ built-ins


@pytest.mark.parametrize(
    ("env", "read", "write", "destructive", "timeout", "limit"),
    [
        ("dev", "allow", "allow", "ask", 600, None),
        ("staging", "allow", "allow", "ask", 600, 120),
        ("prod", "allow", "ask", "ask", 300, 30),
        ("qa", "ask", "ask", "deny", 120, 10),
        ("PROD", "ask", "ask", "deny", 120, 10),  # names are exact: a typo fails closed
        ("", "ask", "ask", "deny", 120, 10),
    ],
)
def test_builtin_policies(
    env: str, read: str, write: str, destructive: str, timeout: int, limit: int | None
) -> None:
    policy = policy_for(None, env)
    assert (policy.read, policy.write, policy.destructive) == (read, write, destructive)
    assert policy.approval_timeout_s == timeout
    assert policy.max_actions_per_minute == limit


def test_unknown_env_gets_strictest_and_no_rules() -> None:
    assert policy_for(default_policies(), "mystery") is STRICTEST
    assert STRICTEST.rules == ()


def test_configured_env_replaces_builtin() -> None:
    doc = parse_policy_toml(_env_toml('write = "deny"', env="dev"))
    assert policy_for(doc, "dev").write == "deny"
    assert policy_for(doc, "prod") == default_policies().environments["prod"]
    assert policy_for(doc, "other") is STRICTEST


def test_default_policies_is_a_fresh_copy() -> None:
    first = default_policies()
    first.environments.pop("prod")
    assert "prod" in default_policies().environments
    assert policy_for(None, "prod").max_actions_per_minute == 30


_PROD = default_policies().environments["prod"]


@pytest.mark.parametrize(
    ("kind", "command", "risk", "segments", "verdict"),
    [
        ("shell", "terraform destroy -auto-approve", "destructive", (), "deny"),
        ("cloud", "terraform destroy", "destructive", (), "deny"),
        ("shell", "terraform -chdir=infra destroy", "destructive", (), "deny"),
        ("shell", "terraform apply -destroy -auto-approve", "destructive", (), "deny"),
        ("shell", "terraform   destroy", "destructive", (), "deny"),
        (
            "shell",
            "cd x && sudo terraform destroy",
            "destructive",
            ("cd x", "terraform destroy"),
            "deny",
        ),
        ("shell", "terraform plan -destroy", "read", (), "allow"),
        ("shell", "terraform apply tfplan", "destructive", (), "ask"),
        ("k8s", "kubectl delete namespace payments", "destructive", (), "deny"),
        ("shell", "kubectl delete ns payments", "destructive", (), "deny"),
        ("shell", "kubectl delete namespaces a b", "destructive", (), "deny"),
        ("shell", "kubectl --context prod delete ns/payments", "destructive", (), "deny"),
        ("shell", "kubectl delete pod api-1 -n payments", "destructive", (), "ask"),
        ("shell", "kubectl get ns", "read", (), "allow"),
        ("sql", "DROP DATABASE shop", "destructive", (), "deny"),
        ("sql", "drop   database shop;", "destructive", (), "deny"),
        ("sql", "BEGIN; Drop Schema billing CASCADE", "destructive", (), "deny"),
        ("sql", "DROP TABLE sessions", "destructive", (), "ask"),
        ("sql", "SELECT 1", "read", (), "allow"),
        ("shell", 'git commit -m "drop database support"', "write", (), "ask"),
        ("shell", "kubectl apply -f deploy.yaml", "write", (), "ask"),
    ],
)
def test_prod_builtin_verdicts(
    kind: Kind, command: str, risk: Risk, segments: tuple[str, ...], verdict: Verdict
) -> None:
    assert evaluate(_PROD, "prod", kind, command, risk, (), segments).verdict == verdict


@pytest.mark.parametrize(
    ("env", "risk", "verdict"),
    [
        ("dev", "write", "allow"),
        ("dev", "destructive", "ask"),
        ("staging", "destructive", "ask"),
        ("staging", "write", "allow"),
        ("nowhere", "read", "ask"),
        ("nowhere", "destructive", "deny"),
    ],
)
def test_builtin_risk_defaults(env: str, risk: Risk, verdict: Verdict) -> None:
    ev = evaluate(policy_for(None, env), env, "shell", "terraform destroy", risk)
    assert (ev.verdict, ev.rule) == (verdict, None)


# ---------------------------------------------------------------- evaluation

_RULES = EnvPolicy(
    read="allow",
    write="ask",
    destructive="ask",
    rules=(
        Rule(kind="shell", match="make deploy*", verdict="deny", reason="deploys go through CI"),
        Rule(kind="shell", match="make *", verdict="allow", reason="make targets are vetted"),
        Rule(kind="sql", match="VACUUM*", risk="write", verdict="allow"),
        Rule(match="git status", verdict="allow", reason="harmless"),
        Rule(kind="k8s", match="*", risk="read", verdict="ask", reason="k8s reads leak secrets"),
        Rule(match="ls*", verdict="allow", reason="listing"),
    ),
)


@pytest.mark.parametrize(
    ("kind", "command", "risk", "segments", "verdict", "index"),
    [
        # first match wins: "make deploy" matches rules 0 and 1
        ("shell", "make deploy", "write", (), "deny", 0),
        ("shell", "make test", "write", (), "allow", 1),
        # a rule decides before the risk default, loosening it when it covers everything
        ("shell", "make clean", "destructive", ("make clean",), "allow", 1),
        # kind filter: the make rules are shell-only
        ("tool", "make test", "write", (), "ask", None),
        # risk filter: VACUUM is allowed only when the classifier says write
        ("sql", "VACUUM FULL", "write", (), "allow", 2),
        ("sql", "VACUUM FULL", "destructive", (), "ask", None),
        # a tightening rule matches reads too
        ("k8s", "kubectl get secrets", "read", (), "ask", 4),
        ("k8s", "kubectl apply -f x", "write", (), "ask", None),
        # globs are case-sensitive and must match the whole command
        ("shell", "MAKE test", "write", (), "ask", None),
        ("shell", "git status --short", "write", (), "ask", None),
        # a loosening rule must cover the whole line and every segment
        ("shell", "git status; rm -rf /", "destructive", ("git status", "rm -rf /"), "ask", None),
        ("shell", "ls && curl x | sh", "destructive", ("ls", "curl x", "sh"), "ask", None),
        ("shell", "ls -la", "write", ("ls -la",), "allow", 5),
        ("shell", "make build && make deploy", "write", ("make build", "make deploy"), "deny", 0),
        # a rule that keeps the default may match one segment
        ("shell", "cd /x && git status", "read", ("cd /x", "git status"), "allow", 3),
        # whitespace is collapsed in commands and segments
        ("shell", "  make \t deploy\n", "write", (), "deny", 0),
        ("shell", "x", "write", ("make   deploy  prod",), "deny", 0),
    ],
)
def test_rule_precedence_and_filters(
    kind: Kind,
    command: str,
    risk: Risk,
    segments: tuple[str, ...],
    verdict: Verdict,
    index: int | None,
) -> None:
    ev = evaluate(_RULES, "prod", kind, command, risk, (), segments)
    assert (ev.verdict, ev.rule_index) == (verdict, index)
    assert ev.rule == (None if index is None else _RULES.rules[index])


def test_evaluation_carries_reasons_and_explanations() -> None:
    reasons = ["deletes a namespace", "cannot see past sudo"]
    ev = evaluate(_PROD, "prod", "shell", "kubectl delete ns a", "destructive", reasons)
    assert isinstance(ev, Evaluation)
    assert ev.reasons == tuple(reasons)
    assert ev.rule is not None
    assert ev.explanation == ev.rule.reason
    default = evaluate(_PROD, "prod", "shell", "rm -rf build", "destructive")
    assert default.explanation == "prod: destructive actions need an operator's approval"
    unnamed = evaluate(_RULES, "dev", "sql", "VACUUM", "write")
    assert unnamed.explanation == "dev: rule 3 (sql 'VACUUM*') says allow"


@pytest.mark.parametrize(("kind", "risk"), [("shell", "catastrophic"), ("docker", "read")])
def test_evaluate_refuses_unknown_vocabulary(kind: str, risk: str) -> None:
    with pytest.raises(ValueError, match="unknown"):
        evaluate(_PROD, "prod", kind, "ls", risk)  # type: ignore[arg-type]


# ---------------------------------------------------------------- rate window


def test_unlimited_window_never_exceeds_but_counts() -> None:
    window = RateWindow(None)
    assert not any(window.hit(1.0) for _ in range(1000))
    assert window.rate(1.0) == 1000
    assert window.rate(61.0) == 0


@pytest.mark.parametrize(
    ("limit", "times", "exceeded"),
    [
        (3, [0, 1, 2, 3], [False, False, False, True]),
        (3, [0, 1, 2, 59.999], [False, False, False, True]),
        (3, [0, 1, 2, 60], [False, False, False, False]),  # exactly 60 s old: aged out
        (3, [0, 1, 2, 3, 4, 120], [False, False, False, True, True, False]),
        (1, [0, 30, 90, 91], [False, True, False, True]),
        (2, [10, 10, 10], [False, False, True]),
    ],
)
def test_rate_window(limit: int, times: list[float], exceeded: list[bool]) -> None:
    window = RateWindow(limit)
    assert [window.hit(t) for t in times] == exceeded


@given(
    limit=st.one_of(st.none(), st.integers(1, 50)),
    steps=st.lists(
        st.tuples(st.sampled_from(["hit", "rate", "reset"]), st.floats(0, 70), st.integers(1, 150)),
        max_size=40,
    ),
)
def test_rate_window_equals_a_plain_sliding_window(
    limit: int | None, steps: list[tuple[str, float, int]]
) -> None:
    """The window answers exactly as a list of every hit filtered to the last
    60 s would: bursts of many hits at one instant, long gaps, resets."""
    window, hits, now = RateWindow(limit), [], 0.0
    for op, gap, repeat in steps:
        now += gap
        for _ in range(repeat if op == "hit" else 1):
            if op == "reset":
                window.reset()
                hits = []
                continue
            hits = [t for t in hits if t > now - 60.0]
            if op == "hit":
                hits.append(now)
                assert window.hit(now) == (limit is not None and len(hits) > limit)
            else:
                assert window.rate(now) == len(hits)


def test_rate_window_keeps_counting_after_many_hits_age_out() -> None:
    window = RateWindow(150)
    assert not any(window.hit(0.0) for _ in range(100))
    assert not any(window.hit(30.0) for _ in range(50))
    assert window.rate(61.0) == 50  # the first 100 aged out
    assert not any(window.hit(61.0) for _ in range(100))
    assert window.hit(61.0)  # 50 + 101 in the last minute
    assert window.rate(91.0) == 101


def test_rate_counts_last_60_seconds() -> None:
    window = RateWindow(3)
    for t in (0.0, 10.0, 20.0, 30.0):
        window.hit(t)
    assert window.rate(30.0) == 4
    assert window.rate(65.0) == 3
    assert window.rate(75.0) == 2
    assert window.rate(90.0) == 0


def test_reset_forgets_hits() -> None:
    window = RateWindow(2)
    window.hit(0)
    window.hit(1)
    assert window.hit(2)
    window.reset()
    assert not window.hit(3)
    assert window.rate(3) == 1


def test_window_memory_is_bounded() -> None:
    window = RateWindow(None)
    for _ in range(MAX_TRACKED + 50):
        window.hit(5.0)
    assert window.rate(5.0) == MAX_TRACKED
    big = RateWindow(MAX_TRACKED + 10)
    assert not any(big.hit(0.0) for _ in range(MAX_TRACKED + 10))
    assert big.hit(0.0)


@pytest.mark.parametrize(
    ("limit", "error"), [(0, ValueError), (-1, ValueError), (True, TypeError), (1.5, TypeError)]
)
def test_rate_window_rejects_bad_limits(limit: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        RateWindow(limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("now", [math.nan, math.inf])
def test_rate_window_rejects_non_finite_time(now: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        RateWindow(3).hit(now)
