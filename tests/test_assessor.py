"""The remembered judgement (``agent_shim.gate.Assessor``): pure, no event loop.

What must never happen: a remembered verdict outliving the policy it was made
under, or standing in for an action it was not made for. Both would let an
agent run under a judgement that is no longer (or never was) the tower's.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_shim import Shim, new_action_id
from agent_shim.gate import MEMO_COMMAND_CHARS, Assessor, Gate, assess, judge
from agent_shim.policy import EnvPolicy, Rule, policy_for
from agent_shim.protocol import Action, ActionEvent

from .conftest import Tower, next_event, wait_for

LENIENT = EnvPolicy(read="allow", write="allow", destructive="allow", approval_timeout_s=60)
STRICT = EnvPolicy(read="allow", write="ask", destructive="deny", approval_timeout_s=60)

COMMANDS = (
    "kubectl get pods -n payments",
    "kubectl delete deployment payments -n prod",
    "terraform destroy -auto-approve",
    "git status",
    "rm -rf /srv/data",
    "echo hi > /etc/motd",
    "ls -la /srv; rm -rf /",
)


def act(command: str, *, action_id: str = "a1", kind: str = "shell", **extra: object) -> Action:
    return Action(action_id=action_id, kind=kind, command=command, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", [LENIENT, STRICT, policy_for(None, "prod"), policy_for(None, "dev")])
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("declared", [None, "read", "destructive"])
def test_same_judgement_as_assess_first_time_and_remembered(
    policy: EnvPolicy, command: str, declared: str | None
) -> None:
    memo = Assessor()
    action = act(command, declared_risk=declared)
    first = memo(policy, "prod", action)
    again = memo(policy, "prod", act(command, action_id="a2", declared_risk=declared))
    assert first == assess(policy, "prod", action)
    assert again is first  # remembered, not judged again


def test_a_replaced_policy_is_never_answered_from_the_old_one() -> None:
    memo = Assessor()
    action = act("kubectl delete deployment payments -n prod")
    assert memo(LENIENT, "prod", action).verdict == "allow"
    # Equal by value to nothing before, a new object: judged afresh.
    assert memo(STRICT, "prod", action).verdict == "deny"
    assert memo(EnvPolicy(**LENIENT.model_dump()), "prod", action).verdict == "allow"
    assert memo(STRICT, "prod", action).verdict == "deny"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (act("git status", declared_risk="read"), act("git status", declared_risk="destructive")),
        (act("git status"), act("git  status ; rm -rf /")),
        (act("deploy", kind="shell"), act("deploy", kind="tool")),
    ],
)
def test_what_the_judgement_reads_is_in_the_key(first: Action, second: Action) -> None:
    memo = Assessor()
    memo(STRICT, "prod", first)
    assert memo(STRICT, "prod", second) == assess(STRICT, "prod", second)
    assert memo(STRICT, "staging", second) == assess(STRICT, "staging", second)
    assert len(memo) == 3


def test_long_commands_are_judged_every_time_and_the_memo_is_bounded() -> None:
    memo = Assessor(max_entries=2)
    long_one = act("echo " + "x" * MEMO_COMMAND_CHARS)
    assert memo(STRICT, "prod", long_one) == assess(STRICT, "prod", long_one)
    assert len(memo) == 0
    for command in COMMANDS:
        memo(STRICT, "prod", act(command))
    assert len(memo) == 2
    assert memo(STRICT, "prod", act(COMMANDS[-1])) == assess(STRICT, "prod", act(COMMANDS[-1]))
    with pytest.raises(ValueError):
        Assessor(max_entries=0)


def test_the_shims_gate_judges_as_judge_does_and_follows_policy_changes() -> None:
    gate = Gate("prod", LENIENT)
    action = act("terraform destroy -auto-approve")
    assert gate.judge(action) == judge(LENIENT, "prod", action)
    assert gate.judge(action).evaluation is gate.judge(action).evaluation  # remembered
    gate.set_policy(STRICT)
    assert gate.judge(action) == judge(STRICT, "prod", action)
    assert gate.judge(action).verdict == "deny"


@settings(max_examples=300, deadline=None)
@given(
    commands=st.lists(
        st.sampled_from(COMMANDS) | st.text(min_size=1, max_size=40).filter(str.strip),
        min_size=1,
        max_size=30,
    ),
    envs=st.lists(st.sampled_from(["prod", "dev", "staging"]), min_size=1, max_size=30),
    policies=st.lists(st.sampled_from([LENIENT, STRICT]), min_size=1, max_size=30),
)
def test_any_sequence_gives_what_assess_gives(
    commands: list[str], envs: list[str], policies: list[EnvPolicy]
) -> None:
    memo = Assessor(max_entries=3)
    for i, command in enumerate(commands):
        env, policy = envs[i % len(envs)], policies[i % len(policies)]
        action = act(command, action_id=f"a{i}")
        assert memo(policy, env, action) == assess(policy, env, action)


async def test_the_hub_judges_a_repeated_command_under_the_policy_of_the_moment(tower: Tower) -> None:
    """The hub remembers its judgement of ``kubectl get pods``; a policy
    applied afterwards must still decide the next proposal of it."""
    command = "kubectl get pods -n payments"
    async with (
        tower.operator("admin") as op,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        await shim.admit(Action(action_id=new_action_id(), kind="shell", command=command))
        first = await next_event(
            op, lambda m: isinstance(m, ActionEvent) and m.action.action.command == command
        )
        assert first.action.policy_verdict == "allow" and first.action.rule is None
        rule = Rule(match="kubectl get*", verdict="ask", reason="reads of payments need a look")
        await op.set_policy("prod", EnvPolicy(rules=(rule,)))
        await wait_for(lambda: shim.policy.rules == (rule,))
        again = Action(action_id=new_action_id(), kind="shell", command=command)
        task = asyncio.create_task(shim.admit(again))
        pending = await next_event(
            op, lambda m: isinstance(m, ActionEvent) and m.action.action.action_id == again.action_id
        )
        assert pending.action.state == "pending"
        assert pending.action.rule == rule  # the hub's own judgement, under the new policy
        task.cancel()
