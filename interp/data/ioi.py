"""The IOI dataset (Wang et al.): prompts, answers, the ABC corruption, and token positions.

A prompt is a template filled with names up to END (" to", before the indirect object): "When Mary and John
went to the store, John gave a drink to" -> " Mary". IO is the name said once, S the subject said twice (S1, S2).
Templates differ in length, so every prompt carries its own positions of IO, S1, S1+1, S2 and END; token
tensors are right-padded with GPT-2's <|endoftext|>, which a causal model never sees from the positions that
matter. Whether a BOS token comes first is the caller's choice (`prepend_bos`), never the tokenizer's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch

from interp.data.ioi_words import BABA_TEMPLATES, OBJECTS, PAPER_NAMES, PLACES
from interp.errors import InterpError
from interp.task import Pair, Task
from interp.tokens import GPT2_BOS, check_single_tokens, gpt2_tokenizer, prompt_ids, single_token_id

POSITIONS = ("IO", "S1", "S1+1", "S2", "END")
TemplateOrder = Literal["mixed", "BABA", "ABBA"]
Corruption = Literal["paper", "distinct"]
# The paper's circuit in GPT-2 small (Wang et al., Figure 2), by class as interp names them: what a found circuit is
# compared with and what planted:ioi is built on; never used to find a circuit.
PAPER_HEADS = {
    "name_mover": [(9, 9), (9, 6), (10, 0)],
    "negative_name_mover": [(10, 7), (11, 10)],
    "backup_name_mover": [(9, 0), (9, 7), (10, 1), (10, 2), (10, 6), (10, 10), (11, 2), (11, 9)],
    "s_inhibition": [(7, 3), (7, 9), (8, 6), (8, 10)],
    "induction": [(5, 5), (6, 9), (5, 8), (5, 9)],
    "duplicate_token": [(0, 1), (3, 0), (0, 10)],
    "previous_token": [(2, 2), (4, 11)],
}


def abba(template: str) -> str:
    """The ABBA twin of a BABA template: the first two names swapped."""
    return template.replace("[B]", "[X]", 1).replace("[A]", "[B]", 1).replace("[X]", "[A]", 1)


def fill(template: str, io: str, s: str, place: str, obj: str, s2: str | None = None) -> str:
    """The prompt up to END: the template without its final " [A]", names filled in. `s2` fills the second
    subject slot (the ABC corruption puts a third name there)."""
    body = template.removesuffix(" [A]")
    first, _, rest = body.partition("[B]")
    body = first + s + rest.replace("[B]", s2 if s2 is not None else s, 1)
    return body.replace("[A]", io).replace("[PLACE]", place).replace("[OBJECT]", obj)


@dataclass
class IOIDataset:
    prompts: list[str]
    io_names: list[str]
    s_names: list[str]
    template_ids: torch.Tensor  # [batch]: the group of each prompt for per-template means
    tokens: torch.Tensor  # [batch, pos], BOS first when prepend_bos, right-padded with PAD
    io_ids: torch.Tensor  # [batch]
    s_ids: torch.Tensor  # [batch]
    positions: dict[str, torch.Tensor]  # name -> [batch]
    prepend_bos: bool
    names: list[tuple[str, str, str]]  # per prompt, the names in the IO, S1 and S2 slots
    templates: list[str]  # what template_ids index

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class _Sample:
    template_id: int
    template: str
    io: str
    s: str
    place: str
    obj: str


def templates_for(order: TemplateOrder, n_templates: int | None = None, base=BABA_TEMPLATES) -> list[str]:
    """The templates prompts are drawn from, as the paper's code picks them (its `nb_templates`, all of `base`
    by default): the first `n_templates` BABA templates or their ABBA twins, or for "mixed" the first
    n_templates // 2 of each order."""
    n_templates = len(base) if n_templates is None else n_templates
    if not 1 <= n_templates <= len(base) or (order == "mixed" and n_templates < 2):
        raise InterpError(
            f"n_templates must be in {2 if order == 'mixed' else 1}..{len(base)} for order {order!r}, not {n_templates}"
        )
    if order == "BABA":
        return list(base[:n_templates])
    if order == "ABBA":
        return [abba(t) for t in base[:n_templates]]
    if order == "mixed":
        half = list(base[: n_templates // 2])
        return half + [abba(t) for t in half]
    raise InterpError(f"unknown template order {order!r}; use mixed, BABA or ABBA")


PAD = GPT2_BOS  # right padding: never seen from a position up to END


def _encode(
    samples: list[_Sample],
    slot_names: list[tuple[str, str, str]],
    tokenizer,
    prepend_bos: bool,
    templates: list[str],
    positions: dict[str, list[int]] | None = None,
) -> IOIDataset:
    """Tokens and positions of the prompts with `slot_names` (IO, S1, S2) filled in. Positions are found on
    p_IOI, where IO and S differ; a corruption (same templates, places, objects, one-token names) has the same
    layout, so it reuses them (checked), whichever of its names coincide."""
    prompts, rows, io_ids, s_ids, found = [], [], [], [], {k: [] for k in POSITIONS}
    for i, (sample, (io, s1, s2)) in enumerate(zip(samples, slot_names)):
        prompt = fill(sample.template, io, s1, sample.place, sample.obj, s2=s2)
        ids = prompt_ids(prompt, tokenizer, prepend_bos=prepend_bos)
        io_id, s1_id, s2_id = (single_token_id(" " + n, tokenizer) for n in (io, s1, s2))
        if positions is None:
            where = {token: [j for j, t in enumerate(ids) if t == token] for token in (io_id, s1_id)}
            if len(where[io_id]) != 1 or len(where[s1_id]) != 2:
                raise InterpError(f"names of {prompt!r} do not each appear where the template puts them")
            at = {"IO": where[io_id][0], "S1": where[s1_id][0], "S2": where[s1_id][1]}
        else:
            at = {key: positions[key][i] for key in ("IO", "S1", "S2")}
            if [ids[at["IO"]], ids[at["S1"]], ids[at["S2"]]] != [io_id, s1_id, s2_id] or len(ids) - 1 != positions[
                "END"
            ][i]:
                raise InterpError(f"the corrupted prompt {prompt!r} is not laid out like its clean prompt")
        for key, value in (*at.items(), ("S1+1", at["S1"] + 1), ("END", len(ids) - 1)):
            found[key].append(value)
        prompts.append(prompt)
        rows.append(ids)
        io_ids.append(io_id)
        s_ids.append(s1_id)
    tokens = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return IOIDataset(
        prompts=prompts,
        io_names=[io for io, _, _ in slot_names],
        s_names=[s1 for _, s1, _ in slot_names],
        template_ids=torch.tensor([s.template_id for s in samples]),
        tokens=tokens,
        io_ids=torch.tensor(io_ids),
        s_ids=torch.tensor(s_ids),
        positions={k: torch.tensor(v) for k, v in found.items()},
        prepend_bos=prepend_bos,
        names=list(slot_names),
        templates=templates,
    )


def corrupted_names(
    rng: random.Random, names: list[str], io: str, s: str, corruption: Corruption
) -> tuple[str, str, str]:
    """(IO, S1, S2) names of a prompt's p_ABC twin. "paper", as the paper's code samples them: IO becomes a name
    X other than IO and S, both S become Y, then S1 becomes Z (Y and Z drawn from all names, so they may
    coincide with each other or with X). "distinct": three different names, none of them IO or S."""
    if corruption == "paper":
        x = rng.choice([m for m in names if m not in (io, s)])
        y, z = rng.choice(names), rng.choice(names)
        return x, z, y
    if corruption == "distinct":
        return tuple(rng.sample([m for m in names if m not in (io, s)], 3))
    raise InterpError(f"unknown corruption {corruption!r}; use paper or distinct")


def ioi_datasets(
    n: int,
    seed: int = 0,
    order: TemplateOrder = "mixed",
    names: list[str] = PAPER_NAMES,
    places: list[str] = PLACES,
    objects: list[str] = OBJECTS,
    base_templates=BABA_TEMPLATES,
    tokenizer=None,
    prepend_bos: bool = False,
    n_templates: int | None = None,
    corruption: Corruption = "paper",
) -> tuple[IOIDataset, IOIDataset]:
    """(p_IOI, p_ABC) as the paper builds them, by default: n seeded prompts, each from a template drawn at random
    (`templates_for`: the "mixed" set is templates 0-6 of each order), two different names, a place and an
    object; no BOS token (the paper tokenizes with prepend_bos=False); p_ABC keeps template, place and object
    and fills the name slots as `corrupted_names` says."""
    tokenizer = tokenizer or gpt2_tokenizer()
    if n < 1:
        raise InterpError(f"the IOI dataset needs at least one prompt, not {n}")
    if len(set(names)) < 5:
        raise InterpError("the IOI dataset needs at least 5 distinct names (2 for a prompt, 3 for its corruption)")
    for words, what in ((names, "name"), (places, "place"), (objects, "object")):
        check_single_tokens([" " + word for word in words], what, tokenizer)
    templates = templates_for(order, n_templates, base_templates)
    rng = random.Random(seed)
    samples, clean_names, corrupt_names = [], [], []
    for _ in range(n):
        template_id = rng.randrange(len(templates))
        io, s = rng.sample(names, 2)
        samples.append(_Sample(template_id, templates[template_id], io, s, rng.choice(places), rng.choice(objects)))
        clean_names.append((io, s, s))
        corrupt_names.append(corrupted_names(rng, names, io, s, corruption))
    clean = _encode(samples, clean_names, tokenizer, prepend_bos, templates)
    positions = {key: value.tolist() for key, value in clean.positions.items()}
    return clean, _encode(samples, corrupt_names, tokenizer, prepend_bos, templates, positions)


def dataset_json(clean: IOIDataset, corrupt: IOIDataset, names: list[str]) -> dict:
    """Everything needed to recompute a result from the file alone: the prompts and the exact tokens run
    (right-padded with PAD), answers, positions, template groups and the vocabulary they were drawn from."""
    return {
        "prepend_bos": clean.prepend_bos,
        "pad_token_id": PAD,
        "prompts": clean.prompts,
        "corrupt_prompts": corrupt.prompts,
        "clean_tokens": clean.tokens.tolist(),
        "corrupt_tokens": corrupt.tokens.tolist(),
        "io_ids": clean.io_ids.tolist(),
        "s_ids": clean.s_ids.tolist(),
        "positions": {key: value.tolist() for key, value in clean.positions.items()},
        "template_ids": clean.template_ids.tolist(),
        "templates": clean.templates,
        "slot_names": {"clean": clean.names, "corrupt": corrupt.names},
        "names": names,
    }


def ioi_task(clean: IOIDataset, corrupt: IOIDataset) -> Task:
    """The pairs as an `interp.task.Task` (interp's task format): tokenized again they give exactly these tokens,
    so `interp ioi`'s prompts can be fed to any command (`--task FILE`)."""
    pairs = [
        Pair(
            clean.prompts[i],
            corrupt.prompts[i],
            [" " + clean.io_names[i]],
            [" " + clean.s_names[i]],
            group=int(clean.template_ids[i]),
            positions={key: int(value[i]) for key, value in clean.positions.items()},
            where=f"prompts[{i}]",
        )
        for i in range(len(clean))
    ]
    return Task("ioi", pairs, "interp.data.ioi", prepend_bos=clean.prepend_bos, metric="logit-diff")
