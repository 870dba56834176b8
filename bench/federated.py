"""Federated training (issue 32) against Flower 1.42's simulation, on the same federation.

The federation: the MNIST test set in datasets/ (8,000 training rows, 2,000 validation rows,
standardized), split over 50 clients by Dirichlet(0.5) on the labels (`federated.partition`);
30 rounds of 10 clients, each client one local epoch of SGD (lr 0.05, batches of 32) on an MLP
(784-128-10); FedAvg; the global model scored on the validation rows after every round. Both
sides get the same rows, split, initial parameters, clients per round (elastrain's seeded draw)
and local training; Flower's side is `bench/flower_peer.py` in a virtual environment of its own
(`bench/requirements-flower.txt`), built on first use. Each side runs as a fresh process tree
with its own Ray and 2 client processes at a time.

Measured, in one run:

- learning: the validation accuracy after each round, ours (`elastrain federated simulate`)
  against Flower's FedAvg: the largest gap over the rounds, in points
  (`max_round_accuracy_gap_pt`); FedProx (mu 0.01) reported beside it;
- speed: the median round's wall time, rounds 2 on (round 1 starts the processes), ours over
  Flower's (`round_time_ratio_to_flower`), and each side's whole run;
- memory: the peak of the memory the whole simulation holds (the sum of its processes'
  proportional set sizes), each side, and ours with 200 clients over ours with 50
  (`memory_ratio_200_to_50`);
- secure aggregation (`federated.secagg`): the bytes a round's updates cost with it over without
  (`secagg_bytes_ratio`), its round time over the plain one's, and the accuracy it reaches;
- dropouts, with secure aggregation on: 30 % of each round's clients SIGKILLed halfway through
  local training (after they shared their keys): the rounds that completed (aggregated, no client
  late at the 60 s deadline; `dropout_rounds_completed`), the longest round, and the accuracy
  after the last round;
- client-level differential privacy (`--dp-clip`, `--dp-noise`): the epsilon spent over the rounds
  at delta 1e-5 (`dp_epsilon`) and the accuracy reached.

    python -m bench.federated [--rounds 30] [--clients 50] [--large-clients 200] [--dp-clip 1] [--dp-noise 1]
                              [--flower-python PATH] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import common

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "datasets" / "mnist-t10k"
FLOWER_VENV = Path(tempfile.gettempdir()) / "elastrain-bench-federated" / "flwr-venv"
PER_ROUND, WORKERS, MIN_ROWS, ALPHA = 10, 2, 10, 0.5
JOB = """
name: fed-mnist
data: {{source: 'idx:{mnist}', validation_fraction: 0.2, split_seed: 0, scaling: standardize}}
model: {{kind: mlp, hidden: [128]}}
train: {{optimizer: sgd, lr: 0.05, batch_size: 32, epochs: 1, seed: 0}}
federated: {{rounds: {rounds}, clients_per_round: {per_round}, min_clients: 5, local_epochs: 1, local_batch_size: 32,
            round_deadline_s: 60}}
"""


def flower_python(given: str | None) -> Path:
    """The Python of the Flower peer's environment: `given`, or one built once under /tmp."""
    if given:
        return Path(given)
    python = FLOWER_VENV / "bin" / "python"
    if not python.exists():
        print(f"building Flower's environment in {FLOWER_VENV} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r",
                        str(ROOT / "bench" / "requirements-flower.txt")], check=True)
    return python


def write_problem(spec_file: Path, clients: int, folder: Path) -> tuple[Path, Path]:
    """The federation as elastrain draws it, for the peer: the rows, the split, each round's
    clients and seeds, and the initial parameters (`bench/flower_peer.py` says the layout)."""
    from elastrain.data.dataset import prepare_dataset
    from elastrain.federated.partition import partition
    from elastrain.federated.simulate import chosen_clients, round_seed
    from elastrain.spec import load_spec
    from elastrain.train.trainer import Trainer

    spec = load_spec(spec_file)
    federated = spec.federated
    data = prepare_dataset(spec)
    parts = partition(data.y_train, clients, "dirichlet", ALPHA, spec.train.seed, MIN_ROWS)
    seed = spec.train.seed
    asked = np.stack([chosen_clients(seed, r, clients, federated.clients_in_round(clients))
                      for r in range(federated.rounds)])
    seeds = np.array([[round_seed(seed, r, int(c)) for c in row] for r, row in enumerate(asked)])
    init = {f"init_{i}": p.detach().numpy() for i, p in enumerate(Trainer(spec, data).model.parameters())}
    problem = folder / "problem.npz"
    np.savez(problem, x_train=data.x_train, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val,
             parts=np.concatenate(parts), part_ends=np.cumsum([len(p) for p in parts]), asked=asked, seeds=seeds,
             **init)
    setup = folder / "setup.json"
    setup.write_text(json.dumps({"hidden": spec.model.hidden, "lr": spec.train.lr, "rounds": federated.rounds,
                                 "batch_size": federated.local_batch_size, "local_epochs": federated.local_epochs,
                                 "seed": seed, "clients": clients, "concurrent": WORKERS}))
    return problem, setup


def measured(argv: list[str], timeout: float = 3600) -> tuple[str, float, float]:
    """`argv` run to its end in a fresh process tree: its standard output, its whole wall time (s)
    and the peak memory of the tree (MB, `common.TotalMemory`).

    Raises:
        SystemExit: it failed (its standard error's tail printed).
    """
    import time

    began = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    memory = common.TotalMemory(process.pid)
    memory.start()
    stdout, stderr = process.communicate(timeout=timeout)
    memory.stopping.set()
    if process.returncode:
        raise SystemExit(f"{' '.join(argv[:3])} ... failed ({process.returncode}):\n{stderr[-3000:]}")
    return stdout, time.perf_counter() - began, memory.peak_mb()


def ours(spec_file: Path, clients: int, *extra: str) -> dict:
    """`elastrain federated simulate` on the federation: its JSON, with `wall_s` (the whole command)
    and `peak_mb`."""
    stdout, wall, peak = measured([sys.executable, "-m", "elastrain", "federated", "simulate", str(spec_file),
                                   "--clients", str(clients), "--partition", f"dirichlet:{ALPHA}",
                                   "--min-rows", str(MIN_ROWS), "--workers", str(WORKERS), "--json", *extra])
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {**summary, "command_s": round(wall, 2), "peak_mb": peak}


def flower(python: Path, problem: Path, setup: Path, folder: Path) -> dict:
    """The peer on the same federation: accuracy and seconds per round, `command_s` and `peak_mb`."""
    result = folder / "flower.json"
    _, wall, peak = measured([str(python), str(ROOT / "bench" / "flower_peer.py"), str(problem), str(setup),
                              str(result)])
    return {**json.loads(result.read_text()), "command_s": round(wall, 2), "peak_mb": peak}


def steady_round_s(round_s: list[float]) -> float:
    """The median round's seconds, the first (which starts the processes) left out."""
    return statistics.median(round_s[1:] if len(round_s) > 1 else round_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--large-clients", type=int, default=200, help="clients of the memory comparison")
    parser.add_argument("--dp-clip", type=float, default=1.0, help="client-level privacy: the updates' L2 clip")
    parser.add_argument("--dp-noise", type=float, default=1.0, help="client-level privacy: the noise multiplier")
    parser.add_argument("--flower-python", help="the Python of an environment with bench/requirements-flower.txt "
                                                "(default: one built under /tmp on first use)")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    options = parser.parse_args()
    if not MNIST.is_dir():
        raise SystemExit(f"the MNIST test set is not at {MNIST}")
    python = flower_python(options.flower_python)
    with tempfile.TemporaryDirectory(prefix="elastrain-bench-federated-") as tmp:
        folder = Path(tmp)
        spec_file = folder / "job.yaml"
        spec_file.write_text(JOB.format(mnist=MNIST, rounds=options.rounds, per_round=PER_ROUND))
        problem, setup = write_problem(spec_file, options.clients, folder)
        peer = flower(python, problem, setup, folder)
        print(f"flower: {peer['accuracy'][-1]:.4f} after {len(peer['accuracy'])} rounds, "
              f"{peer['command_s']} s, {peer['peak_mb']} MB", file=sys.stderr)
        fedavg = ours(spec_file, options.clients)
        print(f"ours: {fedavg['val_accuracy'][-1]:.4f}, {fedavg['command_s']} s, {fedavg['peak_mb']} MB",
              file=sys.stderr)
        fedprox = ours(spec_file, options.clients, "--set", "federated.strategy=fedprox")
        secure = ours(spec_file, options.clients, "--set", "federated.secure_aggregation=true")
        dropping = ours(spec_file, options.clients, "--drop", "0.3", "--set", "federated.secure_aggregation=true")
        large = ours(spec_file, options.large_clients)
        private = ours(spec_file, options.clients, "--set", f"federated.privacy.clip={options.dp_clip}", "--set",
                       f"federated.privacy.noise_multiplier={options.dp_noise}")
    gaps = [abs(a - b) * 100 for a, b in zip(fedavg["val_accuracy"], peer["accuracy"], strict=True)]
    completed = sum(1 for done, late in zip(dropping["aggregated"], dropping["late"], strict=True) if done and not late)
    common.report("federated", {
        "rounds": options.rounds, "clients": options.clients, "clients_per_round": PER_ROUND,
        "partition": f"dirichlet:{ALPHA}", "processes": WORKERS,
        "max_round_accuracy_gap_pt": round(max(gaps), 2),
        "accuracy": {"ours_fedavg": fedavg["val_accuracy"], "flower_fedavg": [round(a, 6) for a in peer["accuracy"]],
                     "ours_fedprox": fedprox["val_accuracy"], "ours_secure": secure["val_accuracy"],
                     "ours_dropping_30pct_secure": dropping["val_accuracy"]},
        "final_accuracy": {"ours_fedavg": fedavg["val_accuracy"][-1], "flower_fedavg": round(peer["accuracy"][-1], 6),
                           "ours_fedprox": fedprox["val_accuracy"][-1], "ours_secure": secure["val_accuracy"][-1],
                           "ours_dropping_30pct_secure": dropping["val_accuracy"][-1]},
        "round_time_ratio_to_flower": round(steady_round_s(fedavg["round_s"]) / steady_round_s(peer["round_s"]), 3),
        "round_s": {"ours": round(steady_round_s(fedavg["round_s"]), 4),
                    "flower": round(steady_round_s(peer["round_s"]), 4)},
        "command_s": {"ours": fedavg["command_s"], "flower": peer["command_s"]},
        "peak_mb": {"ours": fedavg["peak_mb"], "flower": peer["peak_mb"],
                    f"ours_{options.large_clients}_clients": large["peak_mb"]},
        "memory_ratio_200_to_50": round(large["peak_mb"] / fedavg["peak_mb"], 3),
        "dropout_rounds_completed": completed, "dropped": dropping["dropped"],
        "secagg_bytes_ratio": round(statistics.mean(secure["update_bytes"]) / statistics.mean(fedavg["update_bytes"]),
                                    4),
        "update_bytes_per_round": {"plain": statistics.mean(fedavg["update_bytes"]),
                                   "secure": statistics.mean(secure["update_bytes"])},
        "secagg_round_time_ratio": round(steady_round_s(secure["round_s"]) / steady_round_s(fedavg["round_s"]), 3),
        "round_deadline_s": 60, "dropout_round_s_max": max(dropping["round_s"]),
        "dp_epsilon": round(private["epsilon"], 3), "dp_delta": private["delta"], "dp_clip": options.dp_clip,
        "dp_noise_multiplier": options.dp_noise, "dp_accuracy": private["val_accuracy"][-1],
    }, options.save)


if __name__ == "__main__":
    main()
