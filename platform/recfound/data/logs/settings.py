"""The options of one build (`recfound data build` flags), checked when made."""

from __future__ import annotations

from dataclasses import dataclass

MIN_INTERACTIONS = 3  # a user's train, validation and test item
MAX_OPTIONS = 20  # option letters A-T: what SR answers are scored against (the authors' scoring reads no more)


@dataclass(frozen=True)
class Settings:
    seed: int = 0  # every random choice (records, options, negatives, wordings, user and item splits)
    min_interactions: int = MIN_INTERACTIONS  # distinct items a user needs to be kept
    history: int = 10  # items shown in a history
    options: int = 5  # options of SR and MIM (one right)
    negatives: int = 3  # negatives of each embedding record
    per_user: int = 10  # train records per user and task (0: one per train event)

    def __post_init__(self) -> None:
        for name, low in (("min_interactions", MIN_INTERACTIONS), ("history", 1), ("options", 2), ("negatives", 0),
                          ("per_user", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        if self.options > MAX_OPTIONS:  # the letters the authors' scoring reads (A-T)
            raise ValueError(f"--options must be at most {MAX_OPTIONS}, got {self.options}")
