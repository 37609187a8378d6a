"""Build once, run several scripts: the "Multiple Runs" example of the DockerRunner API.

    python examples/multiple_runs.py

Every run gets its own container and its own ./logs/run_<script>_<hex>/ directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safeagents_batch import DockerRunner

HERE = Path(__file__).resolve().parent


def main() -> int:
    # Build once
    runner = DockerRunner(framework="langgraph")
    if not (runner.prepare_environment() and runner.build_image()):
        print(f"Build failed; log: {runner.build_log}")
        return 1

    # Run multiple times
    failed = 0
    for script in ["task1.py", "task2.py", "task3.py"]:
        result = runner.run_script(script_path=HERE / script, bind_azure_folder=False)
        print(f"{script}: {'✅' if result['success'] else '❌'}  ({result['log_dir']})")
        failed += not result["success"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
