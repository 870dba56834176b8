"""The peer of `bench.federated`: the same federation run by Flower 1.42's simulation engine.

Run by `bench.federated` with the Python of a virtual environment of its own
(`bench/requirements-flower.txt`: Flower pins a Ray release other than elastrain's), so this file
imports neither elastrain nor anything of the bench:

    python bench/flower_peer.py PROBLEM.npz SETUP.json RESULT.json

PROBLEM.npz holds what elastrain prepared: the training and validation rows (`x_train`, `y_train`,
`x_val`, `y_val`), every client's row ids (`parts`, cut at `part_ends`), the clients each round
asks (`asked`, rounds x clients) and the initial parameters (`init_0`, `init_1`, ... in the
model's order). SETUP.json holds the MLP's widths and the local training (`hidden`, `lr`,
`batch_size`, `local_epochs`, `seed`, `rounds`, `clients`, `concurrent`).

Flower's `FedAvg` (flwr.serverapp.strategy) aggregates and a server-side `evaluate_fn` scores the
global model on the validation rows after every round, as elastrain's server does. The one
change to Flower's strategy: the clients a round asks are elastrain's draw, not Flower's own, so
that both federations train the same clients each round; each simulated node trains the client
(partition) the round's message names. Local training is plain PyTorch: SGD over the client's
rows in batches of `batch_size` (the last one partial), mean cross-entropy, visiting them in the
order the client's seed for the round draws, as elastrain's sampler draws it
(`np.random.default_rng([seed, epoch]).permutation`): the same seed, the same batches.

RESULT.json: the validation accuracy after each round and the seconds each round took (from the
previous round's evaluation to this one's).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

PROBLEM, SETUP, RESULT = (Path(arg) for arg in sys.argv[1:4])
_cache: dict = {}


def problem() -> tuple[dict, dict]:
    """The rows, split and setup, read once per process."""
    if not _cache:
        with np.load(PROBLEM) as arrays:
            _cache["arrays"] = {name: arrays[name] for name in arrays.files}
        _cache["setup"] = json.loads(SETUP.read_text())
    return _cache["arrays"], _cache["setup"]


def model(setup: dict, n_in: int, n_out: int) -> torch.nn.Sequential:
    """elastrain's MLP: Linear + ReLU per hidden width, then a Linear to the classes."""
    layers: list[torch.nn.Module] = []
    for width in setup["hidden"]:
        layers += [torch.nn.Linear(n_in, width), torch.nn.ReLU()]
        n_in = width
    layers.append(torch.nn.Linear(n_in, n_out))
    return torch.nn.Sequential(*layers)


def fresh_model() -> torch.nn.Sequential:
    arrays, setup = problem()
    net = model(setup, arrays["x_train"].shape[1], int(arrays["y_train"].max()) + 1)
    with torch.no_grad():
        for index, param in enumerate(net.parameters()):
            param.copy_(torch.from_numpy(arrays[f"init_{index}"]))
    return net


client = ClientApp()


@client.train()
def train(message: Message, context: Context) -> Message:
    """One client's round: the global model trained on the rows of the partition the message names."""
    torch.set_num_threads(1)
    arrays, setup = problem()
    config = message.content["config"]
    part = int(config["partition"])
    begin = 0 if part == 0 else int(arrays["part_ends"][part - 1])
    rows = arrays["parts"][begin:int(arrays["part_ends"][part])]
    x = torch.from_numpy(arrays["x_train"][rows])
    y = torch.from_numpy(arrays["y_train"][rows]).long()
    net = fresh_model()
    net.load_state_dict(message.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=setup["lr"])
    for epoch in range(setup["local_epochs"]):
        order = np.random.default_rng([int(config["seed"]), epoch]).permutation(len(rows))
        for batch in torch.from_numpy(order).split(setup["batch_size"]):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    content = RecordDict({"arrays": ArrayRecord(net.state_dict()),
                          "metrics": MetricRecord({"num-examples": len(rows)})})
    return Message(content=content, reply_to=message)


class ElastrainDrawFedAvg(FedAvg):
    """Flower's FedAvg asking, each round, the clients elastrain's draw names."""

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        problem_arrays, setup = problem()
        while len(nodes := sorted(grid.get_node_ids())) < setup["clients"]:
            time.sleep(0.1)
        asked = problem_arrays["asked"][server_round - 1]
        seeds = problem_arrays["seeds"][server_round - 1]
        messages = []
        for slot, part in enumerate(asked):
            record = RecordDict({"arrays": arrays, "config": ConfigRecord({
                "server-round": server_round, "partition": int(part), "seed": int(seeds[slot])})})
            messages.append(Message(content=record, message_type="train", dst_node_id=nodes[slot]))
        return messages


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    arrays, setup = problem()
    net = fresh_model()
    x_val, y_val = torch.from_numpy(arrays["x_val"]), torch.from_numpy(arrays["y_val"]).long()
    accuracy: list[float] = []
    stamps = [time.perf_counter()]

    def evaluate(server_round: int, record: ArrayRecord) -> MetricRecord:
        if server_round == 0:
            stamps[0] = time.perf_counter()
            return MetricRecord({})
        net.load_state_dict(record.to_torch_state_dict())
        with torch.no_grad():
            accuracy.append(float((net(x_val).argmax(1) == y_val).double().mean()))
        stamps.append(time.perf_counter())
        return MetricRecord({"accuracy": accuracy[-1]})

    strategy = ElastrainDrawFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=setup["clients"])
    strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=setup["rounds"],
                   evaluate_fn=evaluate)
    RESULT.write_text(json.dumps({"accuracy": accuracy, "round_s": list(np.diff(stamps))}))


if __name__ == "__main__":
    _, setup = problem()
    run_simulation(server_app=server, client_app=client, num_supernodes=setup["clients"],
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": setup["concurrent"]}})
