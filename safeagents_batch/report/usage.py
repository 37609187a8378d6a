"""Model calls per job and for the batch, from the results table's usage cells: what the page
shows beside the statuses (tokens as the upstreams counted them, the models that answered)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from safeagents_batch.records.model import ModelUsage
from safeagents_batch.report.results import ResultRow, Scalar

COUNTS = ("model_requests", "input_tokens", "output_tokens", "cached_tokens")


@dataclass
class UsageLine:
    """One job's model calls (or the batch's, `job` None), over its runs' latest attempts."""

    job: str | None
    runs: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    models: dict[str, None] = field(default_factory=dict)  # ordered set
    cost_usd: float | None = 0.0  # None: some run's cost is not known

    def add(self, row: ResultRow) -> None:
        self.runs += 1
        for name in COUNTS:
            value = row.usage.get(name)
            self.counts[name] += value if isinstance(value, int) else 0
        cost = row.usage.get("cost_usd")
        if self.cost_usd is None or not isinstance(cost, int | float) or isinstance(cost, bool):
            self.cost_usd = None
        else:
            self.cost_usd += cost
        answered = row.usage.get("model")
        if isinstance(answered, str):
            self.models.update(dict.fromkeys(answered.split()))


def usage_lines(rows: Sequence[ResultRow]) -> list[UsageLine]:
    """Per job with model calls, then the batch's total; none when no run had models."""
    jobs: dict[str, UsageLine] = {}
    total = UsageLine(job=None)
    for row in rows:
        if not row.usage:
            continue
        job = str(row.fixed["job"])
        jobs.setdefault(job, UsageLine(job=job)).add(row)
        total.add(row)
    return [*jobs.values(), total] if jobs else []


def usage_cells(usage: Mapping[str, ModelUsage] | None) -> dict[str, Scalar]:
    """The attempt's model calls, summed over its models, as the results table's columns."""
    if not usage:
        return {}
    total = ModelUsage.sum(usage.values())
    return {
        "model_requests": total.requests,
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "cached_tokens": total.cached_tokens,
        "cost_usd": total.cost_usd if not total.unpriced else None,  # a part unknown: unknown
        "model": " ".join(total.answered_by),
    }
