"""LangGraph graphs for the saver's tests: a tool-calling agent with a fake model, and a loop.

Importable by a subprocess (``python -c "from tests.lg_graphs import ..."``) so that a killed
run and its resume build the same graph.
"""

from __future__ import annotations

import operator
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.channels import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt


class AgentState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    approvals: Annotated[list[str], operator.add]


def _fake_model(state: AgentState) -> dict[str, Any]:
    """Asks for a tool on each human message, answers once the tool has replied. No network."""
    messages = state["messages"]
    last = messages[-1]
    turn = len(messages)
    if isinstance(last, HumanMessage):
        call = {"name": "multiply", "args": {"a": turn, "b": 7}, "id": f"call-{turn}"}
        return {"messages": [AIMessage("", tool_calls=[call], id=f"ai-{turn}")]}
    assert isinstance(last, ToolMessage)
    return {"messages": [AIMessage(f"the product is {last.content}", id=f"ai-{turn}")]}


def _review(state: AgentState) -> dict[str, Any]:
    """A human approves each tool call: the graph stops here until resumed with a Command."""
    call = state["messages"][-1].tool_calls[0]  # type: ignore[union-attr]
    answer = interrupt({"question": "run this tool?", "tool": call["name"], "args": call["args"]})
    return {"approvals": [str(answer)]}


def _tools(state: AgentState) -> dict[str, Any]:
    call = state["messages"][-1].tool_calls[0]  # type: ignore[union-attr]
    product = call["args"]["a"] * call["args"]["b"]
    return {
        "messages": [ToolMessage(str(product), tool_call_id=call["id"], id=f"tool-{call['id']}")]
    }


def _route(state: AgentState) -> str:
    last = state["messages"][-1]
    return "review" if isinstance(last, AIMessage) and last.tool_calls else END


def agent_graph(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """agent -> review (interrupt) -> tools -> agent -> ... until the model answers."""
    builder = StateGraph(AgentState)
    builder.add_node("agent", _fake_model)
    builder.add_node("review", _review)
    builder.add_node("tools", _tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", _route, ["review", END])
    builder.add_edge("review", "tools")
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


class LoopState(TypedDict):
    count: int
    trail: Annotated[list[int], operator.add]


def loop_graph(
    checkpointer: BaseCheckpointSaver[Any], *, steps: int, pause: float = 0.0
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """One node that runs ``steps`` times, each a superstep and so a checkpoint."""

    def work(state: LoopState) -> dict[str, Any]:
        time.sleep(pause)
        return {"count": state["count"] + 1, "trail": [state["count"] + 1]}

    builder = StateGraph(LoopState)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_conditional_edges("work", lambda s: "work" if s["count"] < steps else END)
    return builder.compile(checkpointer=checkpointer)


def run_loop(path: str, thread_id: str, steps: int, pause: float) -> None:
    """Run the loop graph on an LmdbSaver at ``path``, printing each step (for a killed run)."""
    from lmdbstate.langgraph import LmdbSaver

    with LmdbSaver.from_path(path, durability="sync") as saver:
        graph = loop_graph(saver, steps=steps, pause=pause)
        config = {"configurable": {"thread_id": thread_id}, "recursion_limit": steps + 10}
        for update in graph.stream({"count": 0, "trail": []}, config, stream_mode="updates"):
            print(update["work"]["count"], flush=True)
    sys.exit(0)


def _extend(current: Any, writes: Sequence[Any]) -> list[int]:
    return [*(current or []), *(item for write in writes for item in write)]


def _count(state: Any) -> dict[str, Any]:
    return {"items": [state["n"]], "n": state["n"] + 1}


def delta_graph(
    checkpointer: BaseCheckpointSaver[Any], steps: int, snapshot_frequency: int
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A loop whose ``items`` is a DeltaChannel: most checkpoints hold only a marker for it, and
    its value is rebuilt from the ancestors' writes back to the last snapshot (one every
    ``snapshot_frequency`` updates)."""

    channel = DeltaChannel(_extend, list, snapshot_frequency=snapshot_frequency)
    # The functional form: the class form's annotations would be resolved in the module, where
    # snapshot_frequency does not exist.
    fields = {"items": Annotated[list[int], channel], "n": int}
    state = TypedDict("state", fields)  # type: ignore[misc]  # noqa: UP013 - see above
    builder = StateGraph(state)
    builder.add_node("count", _count)
    builder.add_edge(START, "count")
    builder.add_conditional_edges("count", lambda state: END if state["n"] >= steps else "count")
    return builder.compile(checkpointer=checkpointer)
