"""A tiny LangGraph agent that needs no model and no API key: it plans and then acts on a task.

Runs inside the langgraph image (see quick_start.py). Its log messages go to stderr (stderr.log),
its answer to stdout (stdout.log), and it leaves an artifact in the run's log directory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(levelname)s %(message)s")
log = logging.getLogger("agent")

# Inside the container the run's log dir is mounted here; anything written to it is kept.
ARTIFACTS = Path("/safeagents/logs")


class State(TypedDict):
    task: str
    steps: list[str]
    answer: str


def plan(state: State) -> dict[str, list[str]]:
    steps = [f"read '{state['task']}'", "count its words", "report"]
    log.debug("planned %d steps", len(steps))
    return {"steps": steps}


def act(state: State) -> dict[str, str]:
    for step in state["steps"]:
        log.info("step: %s", step)
    return {"answer": f"the task has {len(state['task'].split())} words"}


def main() -> None:
    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("act", act)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "act")
    graph.add_edge("act", END)
    final = graph.compile().invoke(
        {"task": "summarise the safety report", "steps": [], "answer": ""}
    )
    print(f"answer: {final['answer']}")
    if ARTIFACTS.is_dir():
        (ARTIFACTS / "result.json").write_text(json.dumps(final, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
