"""Where a fine-tuning run stands: steps taken, the position in the training stream, the held-out
losses so far. Every checkpoint stores it, so a resumed run continues exactly from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainingProgress:
    """Where a run stands; every checkpoint stores it (as a dict), so a resumed run continues from it."""

    step: int = 0
    sequences: int = 0  # training sequences consumed: the position in the training stream
    tokens: int = 0
    best_loss: float | None = None
    best_step: int | None = None
    initial_loss: float | None = None
    history: list[dict] = field(default_factory=list)  # {"step", "heldout_loss"} per evaluation

    def took_step(self, group: list[list[int]]) -> None:
        self.step += 1
        self.sequences += len(group)
        self.tokens += sum(len(sequence) for sequence in group)

    def record_heldout(self, step: int, loss: float) -> bool:
        """Record an evaluation; True when it is the best so far."""
        self.history.append({"step": step, "heldout_loss": loss})
        if self.initial_loss is None:
            self.initial_loss = loss
        improved = self.best_loss is None or loss < self.best_loss
        if improved:
            self.best_loss, self.best_step = loss, step
        return improved

    @property
    def last_evaluated_step(self) -> int | None:
        return self.history[-1]["step"] if self.history else None

    @property
    def last_heldout_loss(self) -> float | None:
        return self.history[-1]["heldout_loss"] if self.history else None
