# The framework is deliberately not a towerctl dependency; where it is absent, mypy cannot see it.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""A LangGraph tool whose every call goes through the tower.

LangGraph is not a towerctl dependency; this example brings its own:

    pip install langgraph langchain-core          # into the agent's venv
    towerctl up                                   # or: towerctl serve (another terminal)
    export TOWER_URL=ws://127.0.0.1:7340
    export TOWER_TOKEN="$(cat ~/.local/share/towerctl/tokens/agent.token)"
    export TOWER_ENV=dev
    python examples/langgraph_tool.py

It feeds a one-node graph (the ToolNode) the tool calls a model would make (no model or
API key needed): a read-only lookup runs at once; the restart is a write, so
in prod (``TOWER_ENV=prod``) it waits in the TUI's approval queue; the
deletion is destructive and waits in dev too. Approve or deny in the TUI and
watch the answer the model would get. ``@gated()`` goes *under* ``@tool``:
LangGraph reads the name, docstring and signature, which ``@gated`` keeps.
"""

import sys
import uuid

try:
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode
except ImportError:
    sys.exit("this example needs LangGraph: pip install langgraph langchain-core")

from agent_shim.tool import gated


@tool
@gated()
def get_deployment(name: str, namespace: str = "default") -> str:
    """Describe a Kubernetes deployment (replicas, image, status)."""
    return f"{namespace}/{name}: 3/3 replicas ready, image shop:v42"


@tool
@gated(name="k8s.rollout_restart")
def rollout_restart(name: str, namespace: str = "default") -> str:
    """Restart a deployment's pods one by one."""
    return f"{namespace}/{name} restarted"


@tool
@gated(name="k8s.delete_deployment")
def delete_deployment(name: str, namespace: str = "default") -> str:
    """Delete a deployment and its pods."""
    return f"{namespace}/{name} deleted"


def main() -> None:
    # handle_tool_errors=True: a denial becomes the ToolMessage the model reads
    # ("refused: …" with the operator's reason), instead of ending the graph.
    node = ToolNode([get_deployment, rollout_restart, delete_deployment], handle_tool_errors=True)
    graph = StateGraph(MessagesState)
    graph.add_node("tools", node)
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    app = graph.compile()  # in a real agent a model node sits before "tools"
    calls = [
        ("get_deployment", {"name": "web", "namespace": "shop"}),
        ("rollout_restart", {"name": "web", "namespace": "shop"}),
        ("delete_deployment", {"name": "web-canary", "namespace": "shop"}),
    ]
    for tool_name, args in calls:
        message = AIMessage(
            content="",
            tool_calls=[
                {"name": tool_name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}
            ],
        )
        print(f"> {tool_name}({args}) …", flush=True)
        result = app.invoke({"messages": [message]})
        reply = result["messages"][-1]
        print(f"  {reply.status}: {reply.content}")


if __name__ == "__main__":
    main()
