"""What one build read, dropped and wrote (saved as build.json), and its console summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from recfound.data.logs.settings import Settings
from recfound.data.logs.split import SplitCounts
from recfound.data.reader import SPLITS
from recfound.progress import format_table


@dataclass
class BuildReport:
    source: str
    layout: str
    settings: Settings
    split: SplitCounts
    records: dict[str, dict[str, int]]  # split -> task -> records
    skipped: dict[str, dict[str, int]]  # task -> reason -> records left out
    unavailable: dict[str, str]  # task -> why this source cannot yield it
    auxiliary: list[str]  # the tasks declared in tasks.yaml
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tasks(self) -> list[str]:
        """Every task with records, in the order they were built."""
        return list(dict.fromkeys(name for split in SPLITS for name in self.records[split]))

    @property
    def missing(self) -> dict[str, list[str]]:
        """Task -> the splits it has no record in (too few users or items for that split's share)."""
        gaps = {name: [s for s in SPLITS if name not in self.records[s]] for name in self.tasks}
        return {name: splits for name, splits in gaps.items() if splits}

    def summary(self) -> str:
        counts = self.split
        lines = [f"read {counts.events_read:,} events ({self.layout}): {counts.events_without_item:,} without item "
                 f"metadata, {counts.duplicate_events:,} repeated (user, item) pairs, {counts.users_dropped:,} "
                 f"users with fewer than {self.settings.min_interactions} items dropped "
                 f"({counts.events_of_dropped_users:,} events); kept {counts.users:,} users, {counts.items:,} items, "
                 f"{counts.events:,} events",
                 format_table(["task", *SPLITS], [[name, *(self.records[s].get(name, 0) for s in SPLITS)]
                                                  for name in self.tasks])]
        if self.auxiliary:
            lines.append(f"auxiliary tasks declared in tasks.yaml: {', '.join(self.auxiliary)}")
        lines += [f"note: {name} has no {' or '.join(splits)} records" for name, splits in self.missing.items()]
        lines += [f"left out: {count:,} {name} records: {reason}"
                  for name, reasons in self.skipped.items() for reason, count in reasons.items()]
        lines += [f"not built: {name}: {reason}" for name, reason in self.unavailable.items()]
        lines += [f"warning: {text}" for text in self.warnings] + [f"note: {text}" for text in self.notes]
        return "\n".join(lines)
