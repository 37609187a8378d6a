"""Task 1: a one-node LangGraph graph that reverses a string (no model, no API key)."""

from typing import TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    text: str


graph = StateGraph(State)
graph.add_node("reverse", lambda state: {"text": state["text"][::-1]})
graph.add_edge(START, "reverse")
graph.add_edge("reverse", END)
print(graph.compile().invoke({"text": "stressed"})["text"])
