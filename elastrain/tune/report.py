"""What a study leaves for a person to look at: PNG plots of its trials."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

# Optuna's matplotlib plots, by the file each is saved as.
PLOTS = {"optimization_history.png": "plot_optimization_history",
         "parallel_coordinate.png": "plot_parallel_coordinate",
         "param_importances.png": "plot_param_importances"}


def draw_plots(study: optuna.Study, folder: Path, metric: str) -> list[Path]:
    """Save the study's optimization history, parallel coordinates and parameter importances
    (Optuna's fANOVA) as PNG files in `folder`; a plot the trials cannot make yet (importances
    need two complete trials that differ) is skipped.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, name in PLOTS.items():
        if name == "plot_param_importances" and len(complete) < 2:
            continue
        with warnings.catch_warnings():   # Optuna marks its matplotlib plots experimental
            warnings.simplefilter("ignore")
            try:
                axes = getattr(optuna.visualization.matplotlib, name)(study, target_name=metric)
            except (ValueError, RuntimeError, ZeroDivisionError):   # too few distinct trials for this plot
                plt.close("all")
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        figure.savefig(folder / filename, dpi=110)
        plt.close(figure)
        written.append(folder / filename)
    return written
