"""Text models on token ids (`model.kind: text`): a bag of embeddings or a small transformer encoder.

A row holds its other features first and its text's `text_ids` token ids last (as `elastrain
prepare` lays them out; 0 pads). The embeddings of the text's tokens are pooled by their mean over
the tokens that are not padding (Joulin et al. 2017, "Bag of Tricks for Efficient Text
Classification", for the bag; the encoder is torch's `TransformerEncoder` with learned positions).
"""

from __future__ import annotations

import torch
from torch import nn

from elastrain.spec import TextModelSpec


class TextModel(nn.Module):
    """Maps (N, dense + text_ids) float32 rows to (N, n_outputs) scores."""

    def __init__(self, spec: TextModelSpec, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.dense = n_features - spec.text_ids
        self.embedding = nn.Embedding(max(spec.vocabulary, 2), spec.embedding_dim, padding_idx=0)
        self.encoder = None
        if spec.encoder == "transformer":
            self.position = nn.Embedding(spec.text_ids, spec.embedding_dim)
            layer = nn.TransformerEncoderLayer(spec.embedding_dim, spec.heads, 4 * spec.embedding_dim, dropout=0.0,
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, spec.layers, enable_nested_tensor=False)
        self.head = nn.Linear(self.dense + spec.embedding_dim, n_outputs)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        ids = rows[:, self.dense:].long()
        tokens = ids != 0
        vectors = self.embedding(ids)
        if self.encoder is not None:
            positions = torch.arange(ids.shape[1], device=ids.device)
            ignored = ~tokens
            ignored[:, 0] = False   # an empty text still attends to its first slot (no row all masked)
            vectors = self.encoder(vectors + self.position(positions), src_key_padding_mask=ignored)
        pooled = (vectors * tokens.unsqueeze(-1)).sum(1) / tokens.sum(1, keepdim=True).clamp(min=1)
        return self.head(torch.cat([rows[:, :self.dense], pooled], dim=1))
