"""Secure aggregation: the server learns the sum of a round's updates and nothing else of any one.

The protocol is Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving Machine
Learning" (CCS), its semi-honest variant (Figure 4 without signatures), for the clients a round
asks:

1. Each client makes two X25519 key pairs, c (to encrypt to its peers) and s (to mask), and sends
   both public keys; the server sends every client the list (`Advertised`).
2. Each client draws a self-mask seed b, splits its s private key and b into Shamir shares (t of
   n), and sends each peer its shares encrypted with AES-GCM under a key agreed from the c keys;
   the server forwards them (`SharedKeys`).
3. Each client encodes its input in fixed point (a vector of uint64, arithmetic modulo 2^64) and
   adds PRG(b) and, for each peer v, +PRG(s_uv) if u < v, else -PRG(s_uv), where s_uv comes from
   key agreement on the s keys; it sends only that (`MaskedInput`).
4. The server names the clients whose masked input did not come (dropped); each survivor sends,
   for each dropped client, its share of that client's s key and, for each survivor, its share of
   that client's b (`Unmasking`, never both for one client). With t shares the server rebuilds
   the dropped clients' s keys (so the pairwise masks that no longer cancel) and the survivors'
   b, and removes every mask from the sum.

Primitives come from maintained libraries: X25519, HKDF-SHA256, AES-GCM and AES-CTR (the PRG)
from `cryptography`; Shamir's secret sharing (over GF(2^128), 16-byte secrets) from PyCryptodome.
A 32-byte secret is shared as two 16-byte halves.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from elastrain.federated.strategy import ClientUpdate, RoundSum

# Fixed point: a value v is round(v * 2^FRACTION_BITS) as a two's-complement int64 (mod 2^64).
FRACTION_BITS = 24
# |v| must stay under this, so that a sum of up to 2^16 clients' values cannot wrap.
MAX_ABS = 2.0 ** (63 - 16 - FRACTION_BITS)
_KEY_BYTES = 32
_HALF = 16


def encode(values: np.ndarray) -> np.ndarray:
    """float64 values (P,) as fixed-point uint64 (P,) (two's complement).

    Raises:
        ValueError: a value is not finite or |value| >= `MAX_ABS`.
    """
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).all() or (np.abs(values) >= MAX_ABS).any():
        raise ValueError(f"secure aggregation encodes values of magnitude below {MAX_ABS:g}; one is not")
    return np.rint(values * 2.0**FRACTION_BITS).astype(np.int64).view(np.uint64)


def decode(total: np.ndarray) -> np.ndarray:
    """The float64 values (P,) a fixed-point uint64 sum (P,) stands for."""
    return total.view(np.int64).astype(np.float64) / 2.0**FRACTION_BITS


def prg(seed: bytes, size: int) -> np.ndarray:
    """`size` pseudo-random uint64 expanded from a 32-byte `seed` (AES-256 in counter mode)."""
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(stream.update(bytes(8 * size)) + stream.finalize(), np.uint64)


def agree(private: X25519PrivateKey, public: bytes, purpose: bytes) -> bytes:
    """A 32-byte key both ends derive: HKDF-SHA256 over the X25519 agreement of `private` with the
    peer's `public`, bound to `purpose`."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    return HKDF(hashes.SHA256(), _KEY_BYTES, salt=None, info=b"elastrain-secagg " + purpose).derive(shared)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _split(secret: bytes, threshold: int, count: int) -> list[bytes]:
    """Shamir shares of a 32-byte secret for share indices 1..count (each two 16-byte halves)."""
    low = Shamir.split(threshold, count, secret[:_HALF])
    high = Shamir.split(threshold, count, secret[_HALF:])
    return [a[1] + b[1] for a, b in zip(low, high, strict=True)]


def _combine(shares: dict[int, bytes]) -> bytes:
    """The 32-byte secret from shares {index (from 1): 32 bytes}."""
    low = Shamir.combine([(i, s[:_HALF]) for i, s in shares.items()])
    high = Shamir.combine([(i, s[_HALF:]) for i, s in shares.items()])
    return low + high


@dataclass(frozen=True)
class Advertised:
    """A client's public keys for a round (step 1)."""

    client: int
    c_public: bytes
    s_public: bytes

    @property
    def nbytes(self) -> int:
        return 4 + len(self.c_public) + len(self.s_public)


@dataclass(frozen=True)
class SharedKeys:
    """A client's shares for one peer, encrypted to it (step 2)."""

    sender: int
    to: int
    ciphertext: bytes

    @property
    def nbytes(self) -> int:
        return 8 + len(self.ciphertext)


@dataclass(frozen=True)
class MaskedInput:
    """A client's masked input (step 3): uint64 (P,)."""

    client: int
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return 4 + self.values.nbytes


@dataclass(frozen=True)
class Unmasking:
    """A survivor's shares for unmasking (step 4): of the s key of each dropped client, and of the
    self-mask seed of each survivor."""

    sender: int
    s_shares: dict[int, bytes] = field(default_factory=dict)
    b_shares: dict[int, bytes] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return 4 + sum(4 + len(s) for s in (*self.s_shares.values(), *self.b_shares.values()))


class SecAggClient:
    """One client's side of a round of the protocol (see the module docstring)."""

    def __init__(self, client: int) -> None:
        self.client = client
        self.c_key, self.s_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        self.b_seed = os.urandom(_KEY_BYTES)
        self.roster: dict[int, Advertised] = {}
        self.held: dict[int, tuple[bytes, bytes]] = {}   # peer -> (its s-key share, its b share) held here

    def advertise(self) -> Advertised:
        """Step 1: this client's public keys."""
        return Advertised(self.client, _raw(self.c_key.public_key()), _raw(self.s_key.public_key()))

    def share_keys(self, roster: Sequence[Advertised], threshold: int) -> list[SharedKeys]:
        """Step 2: the shares of this client's s key and self-mask seed, one encrypted message per
        peer of `roster` (every client's keys, this one's included; share index = place + 1)."""
        self.roster = {a.client: a for a in roster}
        order = sorted(self.roster)
        s_private = self.s_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        s_shares = _split(s_private, threshold, len(order))
        b_shares = _split(self.b_seed, threshold, len(order))
        messages = []
        for index, peer in enumerate(order):
            if peer == self.client:
                self.held[peer] = (s_shares[index], b_shares[index])
                continue
            key = agree(self.c_key, self.roster[peer].c_public, b"shares")
            plain = struct.pack("<ii", self.client, peer) + s_shares[index] + b_shares[index]
            nonce = os.urandom(12)
            messages.append(SharedKeys(self.client, peer, nonce + AESGCM(key).encrypt(nonce, plain, None)))
        return messages

    def receive(self, messages: Sequence[SharedKeys]) -> None:
        """Step 2 (receiving): keep the shares peers sent this client.

        Raises:
            ValueError: a message is not for this client or does not decrypt (tampered).
        """
        for message in messages:
            key = agree(self.c_key, self.roster[message.sender].c_public, b"shares")
            nonce, body = message.ciphertext[:12], message.ciphertext[12:]
            try:
                plain = AESGCM(key).decrypt(nonce, body, None)
            except Exception as exc:   # cryptography's InvalidTag
                raise ValueError(f"shares from client {message.sender} do not decrypt") from exc
            sender, to = struct.unpack("<ii", plain[:8])
            if (sender, to) != (message.sender, self.client):
                raise ValueError(f"shares from client {message.sender} were not meant for client {self.client}")
            self.held[sender] = (plain[8:8 + _KEY_BYTES], plain[8 + _KEY_BYTES:])

    def masked_input(self, values: np.ndarray, peers: Sequence[int]) -> MaskedInput:
        """Step 3: `values` (float64 (P,)) encoded and masked by this client's self mask and its
        pairwise masks with `peers` (the clients whose shares it received, itself excluded)."""
        masked = encode(values) + prg(self.b_seed, len(values))
        for peer in peers:
            if peer == self.client:
                continue
            mask = prg(agree(self.s_key, self.roster[peer].s_public, b"mask"), len(values))
            masked = masked + mask if self.client < peer else masked - mask
        return MaskedInput(self.client, masked)

    def unmask(self, dropped: Sequence[int], survivors: Sequence[int]) -> Unmasking:
        """Step 4: the shares the server needs, for the clients whose masked input came
        (`survivors`) and those whose did not (`dropped`).

        Raises:
            ValueError: a client is named both ways (the server would learn its input).
        """
        if set(dropped) & set(survivors):
            raise ValueError("a client named both dropped and surviving: refusing to unmask")
        return Unmasking(self.client, {u: self.held[u][0] for u in dropped if u in self.held},
                         {u: self.held[u][1] for u in survivors if u in self.held})


def unmasked_sum(roster: Sequence[Advertised], masked: Sequence[MaskedInput], unmaskings: Sequence[Unmasking],
                 threshold: int, peers: Sequence[int] | None = None) -> np.ndarray:
    """The server's step 4: the sum (float64 (P,)) of the survivors' inputs from their masked
    inputs and the shares the survivors sent. `roster` is every client that advertised keys (its
    order gives the share indices), `peers` those that sent their shares (default: all of them),
    whose pairwise masks the inputs carry.

    Raises:
        ValueError: fewer than `threshold` survivors' shares (the sum cannot be unmasked), or no input.
    """
    if not masked:
        raise ValueError("no masked input to sum")
    if len(unmaskings) < threshold:
        raise ValueError(f"{len(unmaskings)} clients sent shares; unmasking needs {threshold}")
    keys = {a.client: a for a in roster}
    index = {client: place + 1 for place, client in enumerate(sorted(keys))}
    survivors = sorted(m.client for m in masked)
    dropped = [c for c in sorted(keys if peers is None else peers) if c not in survivors]
    size = masked[0].values.size
    total = np.zeros(size, np.uint64)
    for entry in masked:
        total += entry.values
    for client in survivors:
        seed = _combine({index[u.sender]: u.b_shares[client] for u in unmaskings if client in u.b_shares})
        total -= prg(seed, size)
    for client in dropped:
        private = X25519PrivateKey.from_private_bytes(
            _combine({index[u.sender]: u.s_shares[client] for u in unmaskings if client in u.s_shares}))
        for survivor in survivors:
            mask = prg(agree(private, keys[survivor].s_public, b"mask"), size)
            # the survivor added +mask if survivor < client, else -mask
            total = total - mask if survivor < client else total + mask
    return decode(total)


def threshold(asked: int, min_clients: int) -> int:
    """Shares needed to unmask a round that asked `asked` clients: a majority of them, and at least
    the round's `min_clients` (never more than asked)."""
    return min(asked, max(min_clients, asked // 2 + 1))


def plain_bytes(updates: Sequence[ClientUpdate]) -> int:
    """Bytes the clients send the server for a round without secure aggregation: each its id, its
    examples and its update (float64)."""
    return sum(4 + 8 + update.delta.nbytes for update in updates)


def secure_round_sum(updates: Sequence[ClientUpdate], asked: Sequence[int], reported: Sequence[int],
                     least: int) -> tuple[RoundSum | None, int]:
    """A round's sum through the protocol, its clients played here: every client asked advertises
    keys and shares them (step 1-2, before training), the ones that `reported` send masked inputs
    (`updates`, in `reported` order: `examples * delta` and `examples`), and the server unmasks
    their sum with `least` shares at the least (`threshold`). The sum (None when fewer than
    `least` reported: it cannot be unmasked) and the bytes the clients and the server exchanged
    (each message once up and, where the server forwards it, once down)."""
    clients = {c: SecAggClient(c) for c in asked}
    roster = [client.advertise() for client in clients.values()]
    shares = [m for client in clients.values() for m in client.share_keys(roster, least)]
    for peer, client in clients.items():
        client.receive([m for m in shares if m.to == peer])
    if len(reported) < least:
        return None, protocol_bytes(roster, shares, [], [], [])
    masked = [clients[c].masked_input(secured_input(u), asked) for c, u in zip(reported, updates, strict=True)]
    dropped = [c for c in asked if c not in reported]
    unmaskings = [clients[c].unmask(dropped, reported) for c in reported]
    total = unmasked_sum(roster, masked, unmaskings, least)
    return summed_input(total, len(reported)), protocol_bytes(roster, shares, masked, dropped, unmaskings)


def secured_input(update: ClientUpdate) -> np.ndarray:
    """What a client puts through the protocol for its update: `examples * delta`, then `examples`
    (float64 (P + 1,))."""
    return np.append(update.examples * update.delta, update.examples)


def summed_input(total: np.ndarray, clients: int) -> RoundSum:
    """The round's sum from the unmasked sum (P + 1,) of `clients` clients' `secured_input`s."""
    return RoundSum(total[:-1], round(float(total[-1])), clients)


def protocol_bytes(roster: Sequence[Advertised], shares: Sequence[SharedKeys], masked: Sequence[MaskedInput],
                   dropped: Sequence[int], unmaskings: Sequence[Unmasking]) -> int:
    """The bytes a round's protocol moves: the keys up and the list of them down to each client,
    the shares up and forwarded down, the masked inputs, the list of dropped clients down to each
    survivor, and the survivors' shares for unmasking."""
    return (sum(a.nbytes for a in roster) * (1 + len(roster)) + 2 * sum(m.nbytes for m in shares)
            + sum(m.nbytes for m in masked) + 4 * len(dropped) * len(masked) + sum(u.nbytes for u in unmaskings))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def advertised_json(entry: Advertised) -> dict:
    """`entry` as JSON (keys in base64)."""
    return {"client": entry.client, "c_public": _b64(entry.c_public), "s_public": _b64(entry.s_public)}


def advertised_from(data: dict, client: int | None = None) -> Advertised:
    """An `Advertised` from its JSON (`client` given: the sender, whatever the body says).

    Raises:
        ValueError: a key that is not 32 bytes of base64.
    """
    c_public, s_public = _unb64(data.get("c_public")), _unb64(data.get("s_public"))
    if len(c_public) != _KEY_BYTES or len(s_public) != _KEY_BYTES:
        raise ValueError("a public key is not 32 bytes")
    return Advertised(int(data["client"]) if client is None else client, c_public, s_public)


def shared_json(entry: SharedKeys) -> dict:
    """`entry` as JSON."""
    return {"sender": entry.sender, "to": entry.to, "ciphertext": _b64(entry.ciphertext)}


def shared_from(data: dict, sender: int | None = None) -> SharedKeys:
    """A `SharedKeys` from its JSON (`sender` given: the sender, whatever the body says).

    Raises:
        ValueError: malformed.
    """
    return SharedKeys(int(data["sender"]) if sender is None else sender, int(data["to"]),
                      _unb64(data.get("ciphertext")))


def unmasking_json(entry: Unmasking) -> dict:
    """`entry` as JSON."""
    return {"sender": entry.sender, "s_shares": {str(k): _b64(v) for k, v in entry.s_shares.items()},
            "b_shares": {str(k): _b64(v) for k, v in entry.b_shares.items()}}


def unmasking_from(data: dict, sender: int) -> Unmasking:
    """An `Unmasking` of `sender` from its JSON.

    Raises:
        ValueError: malformed, or a share that is not 32 bytes.
    """
    s_shares = {int(k): _unb64(v) for k, v in dict(data.get("s_shares") or {}).items()}
    b_shares = {int(k): _unb64(v) for k, v in dict(data.get("b_shares") or {}).items()}
    if any(len(share) != _KEY_BYTES for share in (*s_shares.values(), *b_shares.values())):
        raise ValueError("a share is not 32 bytes")
    return Unmasking(sender, s_shares, b_shares)


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
