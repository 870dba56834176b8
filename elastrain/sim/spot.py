"""Spot capacity for the simulator: availability traces (the `spot/` data of
the repository's `traces/README.md`), and node prices from a user's config.

An availability trace is `{"metadata": {"gap_seconds": 300}, "data": [...]}`: the number of spot
instances on offer at each tick. Each instance on offer counts as one node of the simulated
cluster.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from elastrain.errors import UserError


@dataclass(frozen=True)
class Availability:
    """Spot nodes on offer at time t (seconds): the sum over zones of each zone's trace.

    Each zone's trace is a step function: the value of tick `floor((t + start_s) / gap)` holds
    until the next tick. Past its end a trace wraps around to its beginning, so a simulation
    longer than the trace (or one that starts late in it) still sees preemptions and returns
    at the trace's own pace.

    Attributes:
        zones: per zone, (seconds between ticks, nodes on offer at each tick).
        start_s: where in the traces time 0 of the simulation falls.
    """

    zones: tuple[tuple[float, tuple[int, ...]], ...]
    start_s: float = 0.0

    def __call__(self, t: float) -> int:
        """Nodes on offer at time t, all zones together."""
        return sum(values[int((t + self.start_s) // gap) % len(values)] for gap, values in self.zones)

    @property
    def duration_s(self) -> float:
        """Seconds the longest zone's trace covers before it wraps around."""
        return max(gap * len(values) for gap, values in self.zones)


def load_availability(paths: Sequence[Path], start_s: float = 0.0) -> Availability:
    """The spot availability of one or more zone trace files, summed (a multi-zone pool),
    starting `start_s` seconds into the traces.

    Raises:
        UserError: no file given, or a file is missing or not a valid availability trace.
    """
    if not paths:
        raise UserError("no spot availability trace given", fix="pass --spot AVAILABILITY.json")
    return Availability(tuple(_zone(Path(p)) for p in paths), start_s)


def _zone(path: Path) -> tuple[float, tuple[int, ...]]:
    fix = 'expected {"metadata": {"gap_seconds": 300}, "data": a list of the nodes on offer at each tick}'
    if not path.is_file():
        raise UserError("spot availability trace not found", where=str(path), fix="check the --spot path")
    try:
        trace = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid JSON ({exc})", where=str(path), fix=fix) from None
    gap = trace.get("metadata", {}).get("gap_seconds") if isinstance(trace, dict) else None
    data = trace.get("data") if isinstance(trace, dict) else None
    if not _number(gap) or gap <= 0:
        raise UserError("metadata.gap_seconds is missing or not a positive number", where=str(path), fix=fix)
    if not isinstance(data, list) or not data or not all(isinstance(v, int) and v >= 0 for v in data):
        raise UserError("data is not a non-empty list of node counts (integers >= 0)", where=str(path), fix=fix)
    return float(gap), tuple(data)


@dataclass(frozen=True)
class Prices:
    """What one node costs per hour (USD), per kind of node.

    The defaults are the list prices of the repository's `traces/README.md` (AWS us-east-1,
    p3.2xlarge): on-demand 3.06; spot the midpoint of its usual 0.9-1.2.
    """

    on_demand_per_hour: float = 3.06
    spot_per_hour: float = 1.05


def load_prices(path: Path | None) -> Prices:
    """The prices of a YAML file with keys `on_demand_per_hour` and `spot_per_hour` (a key left
    out keeps its default); None gives the defaults.

    Raises:
        UserError: the file is missing, is not YAML, has an unknown key or a price that is not a
            number >= 0.
    """
    if path is None:
        return Prices()
    fix = "write e.g. 'on_demand_per_hour: 3.06' and 'spot_per_hour: 1.05' (see examples/prices.yaml)"
    if not path.is_file():
        raise UserError("prices file not found", where=str(path), fix="check the --prices path")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError("not valid YAML" + (f" at line {mark.line + 1}" if mark else ""), where=str(path),
                        fix=fix) from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise UserError("expected a mapping of prices", where=str(path), fix=fix)
    known = set(Prices.__dataclass_fields__)
    unknown = sorted(str(k) for k in config if k not in known)
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)}", where=str(path), fix=fix)
    for key, value in config.items():
        if not _number(value) or value < 0:
            raise UserError(f"{key} must be a number >= 0, not {value!r}", where=str(path), fix=fix)
    return Prices(**{key: float(value) for key, value in config.items()})


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
