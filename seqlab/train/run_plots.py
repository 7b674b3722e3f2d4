"""When a run draws its plots: the loss curve and the objective's own plots.

Drawing them costs a fixed half second or so per evaluation (matplotlib's layout and PNG
encoding), which is a third of a short run's wall time when it happens at every
evaluation. So an evaluation only marks them out of date; they are redrawn at an
evaluation when a refresh is due (``REFRESH_SECONDS`` since the last drawing, and at
least ``COST_SHARE`` times what the last drawing took, so they never cost more than a
small share of the run) and always when the run stops: its last step, an interruption or
an early stop with a checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from seqlab.plots import plot_losses

REFRESH_SECONDS = 60.0
COST_SHARE = 20.0


class RunPlots:
    """The plots of one run in ``plots_dir``: ``loss.png`` from the metrics log and
    whatever ``draw_objective(plots_dir)`` writes from the last evaluation."""

    def __init__(self, plots_dir: Path, read_metrics: Callable[[], list[dict]],
                 draw_objective: Callable[[Path], None], *, clock=time.perf_counter):
        self.plots_dir = Path(plots_dir)
        self.read_metrics = read_metrics
        self.draw_objective = draw_objective
        self.clock = clock
        self.drawn_at = clock()
        self.cost = 0.0
        self.evaluated = False  # an evaluation not yet drawn

    def evaluated_now(self) -> None:
        """An evaluation just ended: draw when a refresh is due, else mark the plots
        out of date."""
        self.evaluated = True
        if self.clock() - self.drawn_at >= max(REFRESH_SECONDS, COST_SHARE * self.cost):
            self.draw()

    def draw(self) -> None:
        """Draw the loss curve, and the objective's plots if an evaluation is undrawn."""
        start = self.clock()
        plot_losses(self.read_metrics(), self.plots_dir / "loss.png")
        if self.evaluated:
            self.draw_objective(self.plots_dir)
            self.evaluated = False
        self.drawn_at = self.clock()
        self.cost = self.drawn_at - start


__all__ = ["RunPlots", "REFRESH_SECONDS", "COST_SHARE"]
