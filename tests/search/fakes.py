"""Stand-ins for the two pieces of Ray Tune a budget reads: a trial (id, config, status, last
result) and the controller that lists the trials."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    status: str = "RUNNING"
    last_result: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeController:
    trials: list[FakeTrial]

    def get_trials(self) -> list[FakeTrial]:
        return self.trials
