"""Rows split over simulated clients: each client's share of a labelled data set, seeded.

`dirichlet(alpha)` gives each client a label mix drawn from a Dirichlet distribution (Hsu, Qi and
Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification"): for each class, its rows are shuffled and split over the clients in proportions
drawn from Dir(alpha, ..., alpha). Small alpha gives clients few classes each; large alpha tends
to the same mix everywhere. `iid` splits the shuffled rows evenly.
"""

from __future__ import annotations

import numpy as np

from elastrain.errors import UserError

# Draws of the proportions before giving up on every client holding `min_rows` (Flower's
# DirichletPartitioner also draws again until its minimum partition size holds).
MAX_DRAWS = 50


def parse_partition(text: str) -> tuple[str, float | None]:
    """`iid` or `dirichlet:ALPHA` as (kind, alpha).

    Raises:
        UserError: anything else, or an alpha that is not a positive number.
    """
    kind, _, arg = text.partition(":")
    if kind == "iid" and not arg:
        return "iid", None
    if kind == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            alpha = -1.0
        if alpha > 0:
            return "dirichlet", alpha
    raise UserError(f"partition {text!r} is not iid or dirichlet:ALPHA with ALPHA > 0", where="--partition",
                    fix="write e.g. dirichlet:0.5 or iid")


def partition(labels: np.ndarray, clients: int, kind: str, alpha: float | None, seed: int,
              min_rows: int = 1) -> list[np.ndarray]:
    """Each client's row indices (int64, sorted) of a data set whose class ids are `labels` (N,):
    disjoint, covering every row; the same arguments, the same split.

    Raises:
        UserError: fewer rows than `clients * min_rows`, or no Dirichlet draw in `MAX_DRAWS`
            gave every client `min_rows` rows (raise alpha or lower the clients).
    """
    if clients < 1 or len(labels) < clients * min_rows:
        raise UserError(f"{len(labels)} rows cannot give {clients} clients {min_rows} rows each",
                        where="--clients", fix="use fewer clients")
    rng = np.random.default_rng([seed, 7])
    if kind == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), clients)]
    classes = np.unique(labels)
    for _ in range(MAX_DRAWS):
        owned: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for label in classes:
            rows = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
            for client, part in enumerate(np.split(rows, cuts)):
                owned[client].append(part)
        parts = [np.sort(np.concatenate(p)).astype(np.int64) for p in owned]
        if min(len(p) for p in parts) >= min_rows:
            return parts
    raise UserError(f"in {MAX_DRAWS} draws of Dirichlet({alpha}) some of the {clients} clients held fewer than "
                    f"{min_rows} rows", where="--partition", fix="raise alpha or use fewer clients")
