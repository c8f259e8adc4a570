"""The demo agents outside production: a refactoring agent in dev, and infrastructure and
cost agents in staging.

They show the calmer side of the fleet: mostly reads and routine changes that
the policy lets through, with a few destructive commands (a cache wiped, an
unplanned ``terraform apply``, old logs expired) so that dev and staging have
approvals too (see :mod:`towerctl.demo_script` for how the scripts are meant to read).
"""

from __future__ import annotations

from typing import Final

from towerctl.demo_episodes import Episode, Persona, Step

TF_PLAN: Final = (
    "  # aws_nat_gateway.main will be updated in-place\n"
    '  ~ tags = {{ "cost-center" = "platform" -> "payments" }}\n'
    "Plan: 0 to add, {changes} to change, 0 to destroy."
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
