"""The Quick Start of the DockerRunner API, runnable as it stands:

    python examples/quick_start.py

Needs a Docker engine. The first run builds the langgraph image from PyPI (a minute or two);
later runs find it under its content-addressed tag. Writes ./build_folder and ./logs in the
current directory, as the documented defaults say.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from safeagents_batch import DockerRunner

HERE = Path(__file__).resolve().parent


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    # 1. Create a runner
    runner = DockerRunner(framework="langgraph", log_output_dir=Path("./logs"))

    # 2. Prepare and build (each returns False, with the reason logged, when it fails)
    if not runner.prepare_environment():
        return 1
    if not runner.build_image():
        print(f"Build failed; log: {runner.build_log}")
        return 1

    # 3. Run your script
    result = runner.run_script(
        script_path=HERE / "my_agent_script.py",
        environment_vars={"LOG_LEVEL": "DEBUG"},
    )

    # 4. Check results
    print(f"Success: {result['success']}")
    print(f"Logs: {result['log_dir']}")
    print(result["stdout"], end="")
    return 0 if result["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
