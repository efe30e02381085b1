"""Batches for training: how packed rows become model inputs. Beside the data because it must agree with
how the data stage labels tokens (IGNORE_INDEX) and how TRL packs rows (seq_lengths); `src/trainer.py`
decides when to use it."""

from __future__ import annotations

import torch

from src.data.tokenization import IGNORE_INDEX


class PackedRowsCollator:
    """Batches packed rows as rows (batch × max_length), with position ids restarting at every example.

    TRL's padding-free collator flattens the whole batch into one row, so on sdpa/eager transformers
    builds one block-diagonal mask over batch × max_length positions: attention work grows with the
    square of the whole batch. Keeping rows apart gives the same isolation (transformers derives a
    per-row block-diagonal mask from the position ids when no attention mask is passed) at a cost that
    grows with the square of one row. A row's padded tail is its own isolated "example" without labels."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            input_ids[row, :length] = torch.tensor(feature["input_ids"])
            labels[row, :length] = torch.tensor(feature["labels"])
            lengths = list(feature.get("seq_lengths") or [length])
            if width > length:
                lengths.append(width - length)
            position_ids[row] = torch.cat([torch.arange(n) for n in lengths])
        # never predict an example's first token from the previous one
        labels[position_ids == 0] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
