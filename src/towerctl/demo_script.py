"""What the demo agents do: six personas and the episodes they loop over.

Pure data, kept apart from :mod:`towerctl.demo` (which runs it) so that the
scripts can be read, and changed, as the story a newcomer sees: agents that
mostly read, change things now and then with a reason, a rollback plan and a
dry run, and occasionally want to delete something. Every command is chosen so
that the real classifier puts it where the story needs it (a test checks the
mix); commands that the classifier rates lower than an agent would (a bulk
``DELETE ... WHERE``) carry ``declared="destructive"``, as a careful agent would.

Commands are templates: ``{pod}``, ``{order_id}``... are filled per episode
from the agent's random generator (see :func:`fill`), so the feed does not
repeat itself word for word, yet a fixed seed replays exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from agent_shim.types import Kind, Risk


@dataclass(frozen=True, slots=True)
class Step:
    """One action an agent proposes, with the fake outcome it pretends to get."""

    kind: Kind
    command: str
    reason: str
    output: str = ""
    target: str = ""  # empty: the persona's default target
    rollback: str = ""
    dry_run: str = ""
    declared: Risk | None = None
    #: Chance that the simulated run "fails" (exit 1 with ``fail_output``): the feed
    #: should show failures too, not only green.
    fail_rate: float = 0.0
    fail_output: str = "error: simulated failure"


@dataclass(frozen=True, slots=True)
class Episode:
    """A short task: steps run in order; a denial abandons the rest and runs ``replan``."""

    name: str
    weight: int
    steps: tuple[Step, ...]
    replan: tuple[Step, ...] = ()
    #: Repeat the first step back to back past the environment's rate limit: the
    #: runaway loop that ``max_actions_per_minute`` exists to stop.
    burst: bool = False


@dataclass(frozen=True, slots=True)
class Persona:
    agent: str
    env: str
    host: str
    target: str
    episodes: tuple[Episode, ...]


PODS_OUT: Final = (
    "NAME                   READY   STATUS             RESTARTS   AGE\n"
    "web-7d9f8b6c4-{pod}    1/1     Running            0          3h12m\n"
    "web-7d9f8b6c4-q8w2n    1/1     Running            0          3h12m\n"
    "web-7d9f8b6c4-m4k7d    0/1     CrashLoopBackOff   14         41m\n"
    "worker-5c6b7f9d8-h2x9p 1/1     Running            0          1d"
)
ROLLOUT_OUT: Final = 'deployment "web" successfully rolled out'
HELM_DIFF: Final = (
    "payments, web, Deployment (apps) has changed:\n"
    "-          image: registry.acme.io/payments/web:2.14.{prev}\n"
    "+          image: registry.acme.io/payments/web:2.14.{minor}\n"
    "-          replicas: 4\n"
    "+          replicas: 6"
)
TF_PLAN: Final = (
    "  # aws_nat_gateway.main will be updated in-place\n"
    '  ~ tags = {{ "cost-center" = "platform" -> "payments" }}\n'
    "Plan: 0 to add, {changes} to change, 0 to destroy."
)

_PROD_KUBE: Final = "kube:prod-eu-west-1"

DEPLOY_BOT: Final = Persona(
    agent="deploy-bot",
    env="prod",
    host="ci-runner-07",
    target=_PROD_KUBE,
    episodes=(
        Episode(
            "check the rollout",
            4,
            (
                Step("shell", "kubectl get pods -n payments", "check pod health before deploying", PODS_OUT),
                Step(
                    "shell",
                    "kubectl rollout status deploy/web -n payments",
                    "is the last rollout done?",
                    ROLLOUT_OUT,
                ),
            ),
        ),
        Episode(
            "ship a release",
            3,
            (
                Step(
                    "shell",
                    "helm history web -n payments --max 3",
                    "find the revision to roll back to",
                    "REVISION  STATUS      CHART       \n{prev_rev}        superseded  web-2.14.{prev}\n"
                    "{rev}        deployed    web-2.14.{prev}",
                ),
                Step(
                    "shell",
                    "helm upgrade web charts/web -n payments -f values-prod.yaml --atomic "
                    "--version 2.14.{minor}",
                    "release 2.14.{minor}: fixes the webhook retry storm (PAY-{ticket})",
                    'Release "web" has been upgraded. Happy Helming!\nREVISION: {next_rev}',
                    rollback="helm rollback web {rev} -n payments",
                    dry_run=HELM_DIFF,
                    fail_rate=0.15,
                    fail_output="Error: UPGRADE FAILED: timed out waiting for the condition",
                ),
                Step(
                    "shell",
                    "kubectl rollout status deploy/web -n payments",
                    "confirm the new pods are ready",
                    ROLLOUT_OUT,
                ),
            ),
        ),
        Episode(
            "restart after a secret rotation",
            2,
            (
                Step(
                    "shell",
                    "kubectl rollout restart deploy/web -n payments",
                    "pick up the rotated credentials in secret payments-db",
                    "deployment.apps/web restarted",
                    rollback="kubectl rollout undo deploy/web -n payments",
                ),
            ),
        ),
        Episode(
            "clear a stuck pod",
            1,
            (
                Step(
                    "shell",
                    "kubectl delete pod web-7d9f8b6c4-m4k7d -n payments",
                    "pod in CrashLoopBackOff for 41 min after a node drain; its ReplicaSet recreates it",
                    'pod "web-7d9f8b6c4-m4k7d" deleted',
                    rollback="none needed: the ReplicaSet schedules a replacement",
                ),
            ),
        ),
        Episode(
            "tear down the canary",
            1,
            (
                Step(
                    "shell",
                    "kubectl delete namespace payments-canary",
                    "the canary finished; remove it",
                    'namespace "payments-canary" deleted',
                ),
            ),
            replan=(
                Step(
                    "shell",
                    "kubectl scale deploy/web-canary --replicas=0 -n payments-canary",
                    "namespace deletion was refused: scale the canary to zero instead",
                    "deployment.apps/web-canary scaled",
                    rollback="kubectl scale deploy/web-canary --replicas=2 -n payments-canary",
                ),
            ),
        ),
    ),
)

REFACTOR_AGENT: Final = Persona(
    agent="refactor-agent",
    env="dev",
    host="dev-ana-laptop",
    target="repo:payments-service",
    episodes=(
        Episode(
            "look around",
            4,
            (
                Step(
                    "shell",
                    "git status",
                    "see what is uncommitted",
                    "On branch fix/retry-budget\nChanges not staged for commit:\n  modified:   src/retry.py",
                ),
                Step(
                    "shell",
                    "git diff --stat",
                    "size of the change",
                    " src/retry.py | 18 +++++++++++-------\n"
                    " 1 file changed, 11 insertions(+), 7 deletions(-)",
                ),
            ),
        ),
        Episode(
            "test and commit",
            4,
            (
                Step(
                    "shell",
                    "python -m pytest -q tests/unit",
                    "run the unit tests before committing",
                    "........................................ [100%]\n{tests} passed in 4.21s",
                    fail_rate=0.1,
                    fail_output="FAILED tests/unit/test_retry.py::test_budget_resets - AssertionError",
                ),
                Step(
                    "shell",
                    "git commit -am 'Retry budget resets per webhook, not per process'",
                    "the tests pass; record the change",
                    "[fix/retry-budget {sha}] Retry budget resets per webhook, not per process",
                    rollback="git reset --soft HEAD~1",
                ),
            ),
        ),
        Episode(
            "lint",
            3,
            (
                Step("shell", "ruff check src", "style check before review", "All checks passed!"),
                Step(
                    "shell",
                    "git log --oneline -5",
                    "write the PR summary",
                    "{sha} Retry budget per webhook\n8c1e0d2 Add retry metrics",
                ),
            ),
        ),
        Episode(
            "free disk space",
            1,
            (
                Step(
                    "shell",
                    "du -sh /var/tmp/build-cache",
                    "the disk is 94% full",
                    "14G\t/var/tmp/build-cache",
                ),
                Step(
                    "shell",
                    "rm -rf /var/tmp/build-cache",
                    "stale since the toolchain bump; 14 GB of a 20 GB disk",
                    rollback="none: the next build repopulates it (about 6 minutes)",
                ),
            ),
        ),
    ),
)

INFRA_AGENT: Final = Persona(
    agent="infra-agent",
    env="staging",
    host="tf-runner-2",
    target="aws:210987654321 (acme-staging)",
    episodes=(
        Episode(
            "inspect",
            5,
            (
                Step(
                    "shell",
                    "aws s3 ls",
                    "list the buckets this account owns",
                    "2024-02-11 09:14:03 acme-staging-logs\n2024-05-30 17:40:51 acme-staging-web",
                ),
                Step(
                    "shell",
                    "aws ec2 describe-instances --filters Name=tag:env,Values=staging",
                    "which instances carry the old tags",
                    '{{"Reservations": [... {instances} instances ...]}}',
                ),
            ),
        ),
        Episode(
            "plan and apply",
            4,
            (
                Step(
                    "shell", "terraform plan -out=tfplan", "retag the NAT gateway for cost reporting", TF_PLAN
                ),
                Step(
                    "shell",
                    "terraform apply tfplan",
                    "apply exactly the reviewed plan",
                    "Apply complete! Resources: 0 added, {changes} changed, 0 destroyed.",
                    rollback="git revert HEAD && terraform plan -out=tfplan && terraform apply tfplan",
                    dry_run=TF_PLAN,
                ),
            ),
        ),
        Episode(
            "apply without a plan",
            1,
            (
                Step(
                    "shell",
                    "terraform apply -auto-approve",
                    "quick drift fix for the NAT gateway tags",
                    "Apply complete! Resources: 0 added, 1 changed, 0 destroyed.",
                ),
            ),
            replan=(
                Step(
                    "shell",
                    "terraform plan -out=tfplan",
                    "apply was refused: make a plan to review first",
                    TF_PLAN,
                ),
                Step(
                    "shell",
                    "terraform apply tfplan",
                    "apply the reviewed plan",
                    "Apply complete! Resources: 0 added, 1 changed, 0 destroyed.",
                    dry_run=TF_PLAN,
                    rollback="git revert HEAD && terraform apply",
                ),
            ),
        ),
    ),
)

ONCALL_ASSISTANT: Final = Persona(
    agent="oncall-assistant",
    env="prod",
    host="sre-bastion-1",
    target=_PROD_KUBE,
    episodes=(
        Episode(
            "triage",
            6,
            (
                Step(
                    "shell",
                    "kubectl get pods -n payments",
                    "INC-{incident}: p99 latency alert on web",
                    PODS_OUT,
                ),
                Step(
                    "shell",
                    "kubectl logs deploy/web -n payments --tail=50",
                    "look for the error",
                    "ERROR webhook retry budget exhausted (attempt 6/6) order={order_id}",
                ),
                Step(
                    "shell",
                    "kubectl top pods -n payments",
                    "CPU or memory pressure?",
                    "NAME                  CPU(cores)  MEMORY(bytes)\n"
                    "web-7d9f8b6c4-{pod}   912m        1432Mi",
                ),
            ),
        ),
        Episode(
            "metrics",
            3,
            (
                Step(
                    "shell",
                    "aws cloudwatch get-metric-statistics --namespace AWS/RDS --metric-name CPUUtilization "
                    "--statistics Average --period 300",
                    "is the database the bottleneck?",
                    '{{"Datapoints": [{{"Average": {cpu}.4}}]}}',
                    target="aws:123456789012 (acme-prod)",
                ),
            ),
        ),
        Episode(
            "scale out",
            1,
            (
                Step(
                    "shell",
                    "kubectl scale deploy/worker --replicas={replicas} -n payments",
                    "INC-{incident}: queue depth 48k and rising; add workers",
                    "deployment.apps/worker scaled",
                    rollback="kubectl scale deploy/worker --replicas=4 -n payments",
                ),
            ),
        ),
        Episode(
            "watch the pods in a tight loop",
            1,
            (
                Step(
                    "shell",
                    "kubectl get pods -n payments -o wide",
                    "INC-{incident}: watching the restart",
                    PODS_OUT,
                ),
            ),
            burst=True,
        ),
    ),
)

DB_MIGRATOR: Final = Persona(
    agent="db-migrator",
    env="prod",
    host="migrate-job-5f",
    target="db:orders-db.prod.internal:5432",
    episodes=(
        Episode(
            "check",
            5,
            (
                Step(
                    "sql",
                    "SELECT count(*) FROM orders",
                    "baseline before the fix",
                    " count\n---------\n {orders}",
                ),
                Step(
                    "sql",
                    "SELECT id, status FROM orders WHERE status = 'stuck' LIMIT 20",
                    "find orders stuck after the webhook outage",
                    "   id   | status\n {order_id} | stuck",
                ),
            ),
        ),
        Episode(
            "fix one order",
            2,
            (
                Step(
                    "sql",
                    "UPDATE orders SET status = 'refunded' WHERE id = {order_id}",
                    "customer was refunded by support (ticket PAY-{ticket}); the row still says stuck",
                    "UPDATE 1",
                    rollback="UPDATE orders SET status = 'stuck' WHERE id = {order_id}",
                    dry_run="EXPLAIN: Index Scan using orders_pkey on orders (rows=1)",
                ),
            ),
        ),
        Episode(
            "prune old sessions",
            1,
            (
                Step(
                    "sql",
                    "SELECT count(*) FROM sessions WHERE created_at < now() - interval '30 days'",
                    "how much would the retention job remove?",
                    " count\n--------\n {stale}",
                ),
                Step(
                    "sql",
                    "DELETE FROM sessions WHERE created_at < now() - interval '30 days'",
                    "retention policy: 30 days; the table is 60% stale rows",
                    "DELETE {stale}",
                    declared="destructive",
                    rollback="restore the rows from the 03:00 snapshot (PITR)",
                    dry_run="would delete {stale} rows of 312,904",
                ),
            ),
        ),
    ),
)

COST_OPTIMIZER: Final = Persona(
    agent="cost-optimizer",
    env="staging",
    host="finops-cron",
    target="aws:210987654321 (acme-staging)",
    episodes=(
        Episode(
            "survey",
            5,
            (
                Step(
                    "shell",
                    "aws s3 ls s3://acme-staging-logs/ --summarize --human-readable",
                    "find the biggest buckets",
                    "Total Objects: 1204331\n   Total Size: {tb}.2 TiB",
                ),
            ),
        ),
        Episode(
            "monthly spend",
            4,
            (
                Step(
                    "shell",
                    "aws ce get-cost-and-usage --time-period Start=2026-10-01,End=2026-11-01 "
                    "--granularity MONTHLY --metrics UnblendedCost",
                    "last month's bill by service",
                    '{{"UnblendedCost": {{"Amount": "{tb}1840.22"}}}}',
                ),
                Step(
                    "shell",
                    "aws ec2 describe-volumes --filters Name=status,Values=available",
                    "unattached volumes cost money for nothing",
                    "{instances} volumes, 1.1 TiB",
                ),
            ),
        ),
        Episode(
            "scale down at night",
            2,
            (
                Step(
                    "shell",
                    "aws autoscaling update-auto-scaling-group --auto-scaling-group-name web-staging "
                    "--min-size 1 --desired-capacity 1",
                    "staging is idle 20:00-07:00; 3 fewer instances overnight",
                    rollback="aws autoscaling update-auto-scaling-group --auto-scaling-group-name "
                    "web-staging --min-size 4 --desired-capacity 4",
                ),
            ),
        ),
        Episode(
            "expire old logs",
            1,
            (
                Step(
                    "shell",
                    "aws s3 rm s3://acme-staging-logs/2024/ --recursive",
                    "2024 logs are past the 12-month retention; {tb}.2 TiB at $23/TiB-month",
                    "delete: s3://acme-staging-logs/2024/01/01/app.log.gz\n...",
                    rollback="none: versioning is off on this bucket",
                    dry_run="(dryrun) delete: s3://acme-staging-logs/2024/... 412,118 objects",
                ),
            ),
        ),
    ),
)

PERSONAS: Final[tuple[Persona, ...]] = (
    DEPLOY_BOT,
    REFACTOR_AGENT,
    INFRA_AGENT,
    ONCALL_ASSISTANT,
    DB_MIGRATOR,
    COST_OPTIMIZER,
)


def persona(index: int) -> Persona:
    """The ``index``-th agent: the first three cover prod, dev and staging; later ones repeat, renamed."""
    base = PERSONAS[index % len(PERSONAS)]
    lap = index // len(PERSONAS)
    if lap == 0:
        return base
    return Persona(f"{base.agent}-{lap + 1}", base.env, f"{base.host}-{lap + 1}", base.target, base.episodes)


def episode_values(rng: random.Random) -> dict[str, str]:
    """Fresh values for one episode's placeholders (the same within an episode)."""
    rev = rng.randint(38, 60)
    minor = rng.randint(3, 9)
    return {
        "pod": "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)),
        "order_id": str(rng.randint(900_000, 999_999)),
        "ticket": str(rng.randint(1000, 4999)),
        "incident": str(rng.randint(2100, 2199)),
        "rev": str(rev),
        "prev_rev": str(rev - 1),
        "next_rev": str(rev + 1),
        "minor": str(minor),
        "prev": str(minor - 1),
        "sha": f"{rng.getrandbits(28):07x}",
        "replicas": str(rng.choice((6, 8, 10))),
        "tests": str(rng.randint(180, 240)),
        "changes": str(rng.randint(1, 3)),
        "instances": str(rng.randint(4, 12)),
        "cpu": str(rng.randint(35, 92)),
        "orders": f"{rng.randint(1_200_000, 1_900_000):,}",
        "stale": f"{rng.randint(150_000, 200_000):,}",
        "tb": str(rng.randint(2, 9)),
    }


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with its ``{placeholders}`` replaced; ``{{``/``}}`` stand for literal braces."""
    return text.format_map(values)
