"""When a run draws its plots: at most a small share of its time, and always at its end."""

from seqlab.train.run_plots import COST_SHARE, REFRESH_SECONDS, RunPlots


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def plots_with(clock, tmp_path, drawn, cost=0.5):
    def draw_objective(plots_dir):
        drawn.append(clock.now)
        clock.now += cost

    return RunPlots(tmp_path / "plots", lambda: [{"step": 1, "loss": 1.0}], draw_objective,
                    clock=clock)


def test_evaluations_inside_the_refresh_interval_are_drawn_once_at_the_end(tmp_path):
    clock, drawn = Clock(), []
    plots = plots_with(clock, tmp_path, drawn)
    for _ in range(5):
        clock.now += REFRESH_SECONDS / 10
        plots.evaluated_now()
    assert drawn == []
    plots.draw()
    assert drawn == [clock.now - 0.5]
    assert (tmp_path / "plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    plots.draw()  # nothing evaluated since: only the loss curve again
    assert len(drawn) == 1


def test_a_long_run_refreshes_its_plots_but_they_never_cost_more_than_their_share(tmp_path):
    clock, drawn = Clock(), []
    plots = plots_with(clock, tmp_path, drawn, cost=10.0)
    for _ in range(100):
        clock.now += REFRESH_SECONDS / 4
        plots.evaluated_now()
    assert len(drawn) >= 2
    gaps = [b - a for a, b in zip(drawn, drawn[1:])]
    assert min(gaps) >= COST_SHARE * plots.cost
