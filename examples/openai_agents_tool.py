# The framework is deliberately not a towerctl dependency; where it is absent, mypy cannot see it.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""An OpenAI Agents SDK tool whose every call goes through the tower.

The Agents SDK is not a towerctl dependency; this example brings its own:

    pip install openai-agents                     # into the agent's venv
    towerctl up                                   # or: towerctl serve (another terminal)
    export TOWER_URL=ws://127.0.0.1:7340
    export TOWER_TOKEN="$(cat ~/.local/share/towerctl/tokens/agent.token)"
    export TOWER_ENV=prod
    python examples/openai_agents_tool.py         # with OPENAI_API_KEY: a real agent run

Without ``OPENAI_API_KEY`` it calls the gated tools directly, as the SDK
would, so the gate can be tried with no model: the lookup runs at once, the
scale-down waits for an operator in the TUI (a write in prod), and a denial
prints the reason the model would be given.

``@gated()`` goes *under* ``@function_tool``: the SDK reads the name,
docstring and signature (kept by ``@gated``), and its default
``failure_error_function`` hands an ``ActionDenied`` message back to the
model as the tool's result, so the agent learns why and can ask or adapt.
"""

import asyncio
import os
import sys

try:
    from agents import Agent, Runner, function_tool
except ImportError:
    sys.exit("this example needs the OpenAI Agents SDK: pip install openai-agents")

from agent_shim import ActionDenied
from agent_shim.tool import gated


@gated(name="billing.get_invoice")
async def get_invoice(invoice_id: str) -> str:
    """Look up an invoice by id."""
    return f"invoice {invoice_id}: 120.00 EUR, paid"


@gated(name="k8s.scale_deployment")
async def scale_deployment(name: str, replicas: int, namespace: str = "default") -> str:
    """Scale a Kubernetes deployment to the given number of replicas."""
    return f"{namespace}/{name} scaled to {replicas}"


agent = Agent(
    name="ops-assistant",
    instructions="You help the on-call engineer. Use the tools; never guess.",
    tools=[function_tool(get_invoice), function_tool(scale_deployment)],
)


async def without_a_model() -> None:
    for call, args in ((get_invoice, ("INV-1042",)), (scale_deployment, ("web", 0, "shop"))):
        print(f"> {call.__name__}{args} …", flush=True)
        try:
            print("  ok:", await call(*args))
        except ActionDenied as exc:
            print(f"  denied by {exc.by or 'the tower'}: {exc.reason}")


def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        result = Runner.run_sync(agent, "Scale the web deployment in shop down to 0 replicas.")
        print(result.final_output)
    else:
        asyncio.run(without_a_model())


if __name__ == "__main__":
    main()
