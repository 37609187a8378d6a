from __future__ import annotations

from safeagents_batch.cli import main

raise SystemExit(main())
