"""The production agents of the demo: a deploy bot, an on-call assistant and a database migrator.

Production is where the story's tension is: releases with a rollback plan and
a dry run, incident triage that mostly reads, a runaway loop the rate limit
stops, and the occasional delete that needs an operator (see
:mod:`towerctl.demo_script` for how the scripts are meant to read).
"""

from __future__ import annotations

from typing import Final

from towerctl.demo_episodes import Episode, Persona, Step

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
