"""Batches of tokenised examples: dynamic padding to the longest sequence of the batch, with the model's pad id."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

PADDED = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}  # None: the model's pad token id


def pad_collate(pad_token_id: int = 0) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """A DataLoader ``collate_fn`` that pads a batch's token columns to its longest example (right padding).

    Examples of equal length are simply stacked, so packed corpora and pre-padded data batch as before;
    every other column (labels, ``idx``) is stacked as is.
    """

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        out = {}
        for key in examples[0]:
            values = [torch.as_tensor(e[key]) for e in examples]
            if key in PADDED:
                fill = pad_token_id if PADDED[key] is None else PADDED[key]
                out[key] = pad_sequence(values, batch_first=True, padding_value=fill)
            else:
                out[key] = torch.stack(values)
        return out

    return collate


def pad_token_id(model: nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "pad_token_id", None) or 0)
