"""The capital-city experiment's logit lens at the last position (Merullo et al. 2024): each one-shot prompt read once,
the argument's and the answer's lens ranks at every block boundary, and where the answer first leads (the
emergence layer, the mode over prompts)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.data.capitals import Item, argument_answer_ids
from interp.lens import boundary_hooks
from interp.vectors import last_position, lens_ranks, mlp_out


@dataclass
class Reading:
    """One forward pass over a task's one-shot prompts, kept at the last position."""

    items: list[Item]
    residuals: torch.Tensor  # [n, n_layers + 1, d_model]: embeddings, then each block's output
    mlp_outputs: torch.Tensor  # [n, n_layers, d_model]
    argument_ranks: torch.Tensor  # [n, n_layers + 1]: lens rank of the argument at each boundary (1 = top)
    answer_ranks: torch.Tensor  # [n, n_layers + 1]
    prepend_bos: bool  # how its prompts were tokenized; the prompts built from them follow suit
    indices: torch.Tensor  # [n]: each prompt's place among the prompts read (a subset keeps them)
    n_read: int  # how many prompts were read

    @property
    def answered(self) -> torch.Tensor:
        return self.answer_ranks[:, -1] == 1  # the last boundary's lens is the model's own prediction

    def subset(self, mask: torch.Tensor) -> Reading:
        return Reading(
            [item for item, keep in zip(self.items, mask) if keep],
            self.residuals[mask],
            self.mlp_outputs[mask],
            self.argument_ranks[mask],
            self.answer_ranks[mask],
            self.prepend_bos,
            self.indices[mask],
            self.n_read,
        )

    def place(self, values) -> list[float | int | None]:
        """Per-prompt values [n] (NaN where the measurement does not apply) as results.json keeps every per-prompt
        series: one entry per prompt read, None where it was not measured. All series of a task then line up
        with its prompts, which the bootstrap resamples (a subset's values are resampled with the subset)."""
        placed = torch.full((self.n_read,), float("nan"), dtype=torch.float64)
        placed[self.indices] = torch.as_tensor(values, dtype=torch.float64)
        return [None if math.isnan(v) else int(v) if v.is_integer() else v for v in placed.tolist()]


def read(model, items: Sequence[Item], prepend_bos: bool = True) -> Reading:
    n_layers = model.cfg.n_layers
    boundaries, outputs = boundary_hooks(n_layers), [mlp_out(layer) for layer in range(n_layers)]
    cache = last_position(model, [item.prompt for item in items], boundaries + outputs, prepend_bos=prepend_bos)
    residuals = torch.stack([cache[name] for name in boundaries], dim=1)
    ranks = lens_ranks(model, residuals, argument_answer_ids(items))
    return Reading(
        list(items),
        residuals,
        torch.stack([cache[name] for name in outputs], dim=1),
        ranks[..., 0],
        ranks[..., 1],
        prepend_bos,
        torch.arange(len(items)),
        len(items),
    )


def measured(reading: Reading) -> tuple[Reading, str]:
    """The prompts the model answers: the mechanism is about facts it knows. A model that answers fewer than two
    (random weights; one prompt lends its o-vector to the others) is measured on all of them."""
    if reading.answered.sum() >= 2:
        return reading.subset(reading.answered), "answered prompts"
    return reading, "all prompts (the model answers fewer than two)"


def first_lead_blocks(ranks: torch.Tensor) -> list[int | None]:
    """Per prompt, the first block after which the token leads the lens; None where it never does."""
    leads = ranks[:, 1:] == 1  # the embedding boundary only shows the last input token: not a block's work
    return [int(row.nonzero()[0]) if row.any() else None for row in leads]


def peak_blocks(ranks: torch.Tensor) -> list[int]:
    """Per prompt, the first block after which the token reaches its best lens rank: where it first leads, for
    a prompt the model answers."""
    blocks = ranks[:, 1:]
    return (blocks == blocks.min(dim=1, keepdim=True).values).int().argmax(dim=1).tolist()


def emergence_layer(answer_ranks: torch.Tensor) -> int:
    """The block where the answer most often first leads (ties: the earliest). Prompts where it never leads
    count at the block where it first reaches its best rank (see `peak_blocks`)."""
    counts = Counter(peak_blocks(answer_ranks))
    return min(counts, key=lambda block: (-counts[block], block))


def trajectory(reading: Reading) -> dict:
    """Median and quartiles over prompts of the argument's and the answer's lens rank at each boundary."""

    def quantiles(ranks):
        q = torch.quantile(ranks.float(), torch.tensor([0.25, 0.5, 0.75]), dim=0)
        return {"q25": q[0], "median": q[1], "q75": q[2]}

    return {"argument": quantiles(reading.argument_ranks), "answer": quantiles(reading.answer_ranks)}


def lead_counts(blocks: list[int | None]) -> dict[str, int]:
    """How many prompts first lead after each block ("never": not at all)."""
    counts = Counter(blocks)
    ordered = sorted(block for block in counts if block is not None) + ([None] if None in counts else [])
    return {"never" if block is None else str(block): counts[block] for block in ordered}
