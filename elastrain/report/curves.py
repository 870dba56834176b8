"""A job's curves in one picture: training loss and validation metrics against the step, and
beneath them, on the same axis, the worker count over time with each resize, lost worker and
recovery marked. Drawn with matplotlib's Agg backend (files only, no display)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from elastrain.runs import JobState

# Validation metrics drawn, the first present of each pair (classification, regression).
SHOWN = (("val_accuracy", "val_r2"), ("val_f1_macro", "val_mse"))
# Events marked on both panels: (label, color). A resize's scale_in / scale_out event is shown
# by its `resized` event, a chaos kill by the `worker_lost` it causes.
MARKED = {"resized": ("resized", "tab:green"), "worker_lost": ("worker lost", "tab:red"),
          "recovered": ("recovered", "tab:purple"), "resume": ("resumed", "tab:blue")}
# Events whose worker count is the group's from then on (a job's last event is the state it ended in).
MEMBERSHIP = ("start", "scale_out", "scale_in", "resized", "worker_lost", "recovered", "resume", JobState.SUCCEEDED,
              JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED)


def draw_curves(series: dict[str, list[dict]], events: list[dict], title: str, out: Path) -> Path:
    """Write the picture of a job to `out` (PNG).

    Args:
        series: the job's metric series, {name: [{step, epoch, value, t}]} (`RunFolder.read_metrics`).
        events: its events, oldest first (`RunFolder.read_events`).
        title: the headline (the job id).

    Returns:
        `out`.
    """
    figure = Figure(figsize=(9, 5.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    if "train_loss" in series:
        points = series["train_loss"]
        top.plot([p["step"] for p in points], [p["value"] for p in points], color="tab:gray", linewidth=1,
                 label="training loss")
    top.set_ylabel("training loss")
    validation = top.twinx()
    for choices, color in zip(SHOWN, ("tab:blue", "tab:cyan"), strict=True):
        name = next((n for n in choices if n in series), None)
        if name:
            points = series[name]
            validation.plot([p["step"] for p in points], [p["value"] for p in points], marker="o", color=color,
                            label=name)
    validation.set_ylabel("validation")
    handles = top.get_legend_handles_labels()[0] + validation.get_legend_handles_labels()[0]
    if handles:
        top.legend(handles=handles, loc="center right", fontsize="small")
    steps, workers = [], []
    for event in events:
        if event["kind"] in MEMBERSHIP:
            steps.append(event["step"])
            workers.append(event["workers"])
    if steps:
        bottom.step(steps, workers, where="post", color="black")
        bottom.set_ylim(0, max(workers) + 2)   # room for the event labels
    for event in events:
        if event["kind"] in MARKED:
            label, color = MARKED[event["kind"]]
            for axis in (top, bottom):
                axis.axvline(event["step"], color=color, linestyle=":", linewidth=1)
            bottom.annotate(label, (event["step"], 0.95), xycoords=bottom.get_xaxis_transform(), fontsize="x-small",
                            color=color, rotation=90, va="top", ha="right")
    bottom.set_ylabel("workers")
    bottom.set_xlabel("step")
    top.set_title(title, fontsize="medium")
    FigureCanvasAgg(figure).print_png(str(out))
    return out
