from __future__ import annotations

from safeagents_batch.cli.main import main

raise SystemExit(main())
