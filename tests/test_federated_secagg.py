"""Secure aggregation (issue 32; Bonawitz et al. 2017): the server learns the sum of the round's
inputs, from masked inputs that tell it nothing of any one, even when clients drop after sharing
their keys; it refuses what would unmask one client; a federation under it learns as without."""

import numpy as np
import pytest

from elastrain.data.dataset import prepare_dataset
from elastrain.federated.partition import partition
from elastrain.federated.secagg import (
    MAX_ABS,
    SecAggClient,
    SharedKeys,
    decode,
    encode,
    secure_round_sum,
    unmasked_sum,
)
from elastrain.federated.simulate import simulate
from elastrain.federated.strategy import ClientUpdate, round_sum
from elastrain.spec import parse_spec
from elastrain.spec.federated import FederatedSpec

RNG = np.random.default_rng(7)


def protocol(count: int, least: int, size: int = 2000):
    """`count` clients through steps 1-2, each with an input of `size` values."""
    clients = {c: SecAggClient(c) for c in range(10, 10 + count)}
    roster = [client.advertise() for client in clients.values()]
    messages = [m for client in clients.values() for m in client.share_keys(roster, least)]
    for peer, client in clients.items():
        client.receive([m for m in messages if m.to == peer])
    inputs = {c: RNG.normal(scale=3.0, size=size) for c in clients}
    return clients, roster, messages, inputs


def test_the_server_learns_the_sum_and_no_input_even_when_clients_drop():
    """Kind: the protocol's promise. 7 clients share keys, 2 drop before sending their masked
    input: from the 5 masked inputs and the survivors' shares the server gets their plain sum to
    fixed-point tolerance; no masked input it received is its client's input (nor correlated
    with it), and with 4 shares (threshold 5) it cannot unmask."""
    clients, roster, _, inputs = protocol(7, least=5)
    survivors, dropped = [10, 11, 13, 15, 16], [12, 14]
    masked = [clients[c].masked_input(inputs[c], list(clients)) for c in survivors]
    unmaskings = [clients[c].unmask(dropped, survivors) for c in survivors]
    total = unmasked_sum(roster, masked, unmaskings, 5)
    assert np.abs(total - sum(inputs[c] for c in survivors)).max() < 1e-6
    for entry in masked:
        seen = decode(entry.values)
        assert not np.allclose(seen, inputs[entry.client], atol=1.0)
        assert abs(np.corrcoef(seen, inputs[entry.client])[0, 1]) < 0.1
    with pytest.raises(ValueError, match="unmasking needs 5"):
        unmasked_sum(roster, masked, unmaskings[:4], 5)


def test_a_client_refuses_what_would_unmask_one_and_shares_cannot_be_forged():
    """Kind: the protocol's guards. Asked for both the self-mask share and the key share of one
    client (which would reveal its input), a client refuses; shares altered on the way, or sent
    to another client, do not decrypt; a value too large for fixed point is refused."""
    clients, _, messages, _ = protocol(3, least=2)
    with pytest.raises(ValueError, match="both dropped and surviving"):
        clients[10].unmask([11], [11, 12])
    sent = next(m for m in messages if m.sender == 11 and m.to == 10)
    forged = SharedKeys(11, 10, sent.ciphertext[:-1] + bytes([sent.ciphertext[-1] ^ 1]))
    with pytest.raises(ValueError, match="do not decrypt"):
        clients[10].receive([forged])
    with pytest.raises(ValueError, match="do not decrypt"):
        clients[12].receive([SharedKeys(11, 12, sent.ciphertext)])
    with pytest.raises(ValueError, match="magnitude"):
        encode(np.array([MAX_ABS]))


def test_a_round_through_the_protocol_gives_the_plain_rounds_sum_at_a_stated_cost():
    """Kind: the round as the server loop runs it. The weighted sum and examples of the reported
    updates equal `round_sum`'s; a round with fewer reports than the threshold has no sum."""
    updates = [ClientUpdate(RNG.normal(size=500), int(RNG.integers(10, 200))) for _ in range(4)]
    summed, sent = secure_round_sum(updates, [0, 1, 2, 3, 4, 5], [0, 1, 2, 3], least=4)
    plain = round_sum(updates)
    assert summed.examples == plain.examples and summed.clients == 4
    assert np.abs(summed.weighted_delta - plain.weighted_delta).max() < 1e-4
    assert sent > 4 * 8 * 500
    nothing, _ = secure_round_sum(updates[:3], [0, 1, 2, 3, 4, 5], [0, 1, 2], least=4)
    assert nothing is None


def test_a_federation_under_secure_aggregation_learns_as_without_it():
    """Kind: end to end. The digits federation with secure aggregation on moves the global model
    where the plain one does (to fixed-point tolerance), and its rounds cost more bytes."""
    spec = parse_spec("""
name: fed-secagg
data: {source: 'builtin:digits'}
model: {kind: mlp, hidden: [16]}
train: {optimizer: sgd, lr: 0.05, batch_size: 32, epochs: 1, seed: 2}
""")
    data = prepare_dataset(spec)
    parts = partition(data.y_train, 10, "dirichlet", 0.5, seed=0, min_rows=10)
    plain_spec = FederatedSpec(rounds=4, clients_per_round=4, min_clients=2, local_epochs=1, local_batch_size=16)
    plain, plain_records = simulate(spec, plain_spec, data, parts)
    secure, records = simulate(spec, plain_spec.model_copy(update={"secure_aggregation": True}), data, parts)
    assert np.abs(secure.weights - plain.weights).max() < 1e-5
    assert all(r.aggregated for r in records)
    assert all(s.update_bytes > p.update_bytes for s, p in zip(records, plain_records, strict=True))
