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

from interp.data.ioi_words import BABA_TEMPLATES, NAMES, OBJECTS, PLACES
from interp.errors import InterpError
from interp.tokens import GPT2_BOS, check_single_tokens, gpt2_tokenizer, prompt_ids, single_token_id

POSITIONS = ("IO", "S1", "S1+1", "S2", "END")
TemplateOrder = Literal["mixed", "BABA", "ABBA"]


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


def templates_for(order: TemplateOrder, base=BABA_TEMPLATES) -> list[str]:
    if order == "BABA":
        return list(base)
    if order == "ABBA":
        return [abba(t) for t in base]
    if order == "mixed":
        return [t for pair in zip(base, (abba(t) for t in base)) for t in pair]
    raise InterpError(f"unknown template order {order!r}; use mixed, BABA or ABBA")


PAD = GPT2_BOS  # right padding: never seen from a position up to END


def _encode(samples: list[_Sample], names_of, tokenizer, prepend_bos: bool, templates: list[str]
            ) -> IOIDataset:
    prompts, io_names, s_names, slot_names = [], [], [], []
    rows, positions = [], {k: [] for k in POSITIONS}
    for sample in samples:
        io, s1, s2 = names_of(sample)
        prompt = fill(sample.template, io, s1, sample.place, sample.obj, s2=s2)
        ids = prompt_ids(prompt, tokenizer, prepend_bos=prepend_bos)
        io_id, s1_id, s2_id = (single_token_id(" " + n, tokenizer) for n in (io, s1, s2))
        where = {token: [i for i, t in enumerate(ids) if t == token] for token in {io_id, s1_id, s2_id}}
        s1_at = where[s1_id][0]
        s2_at = where[s2_id][-1]
        if len(where[io_id]) != 1 or (s1_id == s2_id and len(where[s1_id]) != 2):
            raise InterpError(f"names of {prompt!r} do not each appear where the template puts them")
        positions["IO"].append(where[io_id][0])
        positions["S1"].append(s1_at)
        positions["S1+1"].append(s1_at + 1)
        positions["S2"].append(s2_at)
        positions["END"].append(len(ids) - 1)
        prompts.append(prompt)
        io_names.append(io)
        s_names.append(s1)
        slot_names.append((io, s1, s2))
        rows.append(ids)
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return IOIDataset(
        prompts=prompts, io_names=io_names, s_names=s_names,
        template_ids=torch.tensor([s.template_id for s in samples]), tokens=tokens,
        io_ids=torch.tensor([single_token_id(" " + n, tokenizer) for n in io_names]),
        s_ids=torch.tensor([single_token_id(" " + n, tokenizer) for n in s_names]),
        positions={k: torch.tensor(v) for k, v in positions.items()}, prepend_bos=prepend_bos, names=slot_names,
        templates=templates,
    )


def ioi_datasets(n: int, seed: int = 0, order: TemplateOrder = "mixed", names: list[str] = NAMES,
                 places: list[str] = PLACES, objects: list[str] = OBJECTS, base_templates=BABA_TEMPLATES,
                 tokenizer=None, prepend_bos: bool = True) -> tuple[IOIDataset, IOIDataset]:
    """(p_IOI, p_ABC): n seeded IOI prompts and their ABC corruption (same template, place and object; the
    three name slots filled with three other names, none of them the original IO or S). BOS first when
    `prepend_bos`."""
    tokenizer = tokenizer or gpt2_tokenizer()
    if n < 1:
        raise InterpError(f"the IOI dataset needs at least one prompt, not {n}")
    if len(set(names)) < 5:
        raise InterpError("the IOI dataset needs at least 5 distinct names (2 for a prompt, 3 for its corruption)")
    for words, what in ((names, "name"), (places, "place"), (objects, "object")):
        check_single_tokens([" " + word for word in words], what, tokenizer)
    templates = templates_for(order, base_templates)
    rng = random.Random(seed)
    samples, corruptions = [], []
    for i in range(n):
        template_id = i % len(templates) if order == "mixed" else rng.randrange(len(templates))
        io, s = rng.sample(names, 2)
        samples.append(_Sample(template_id, templates[template_id], io, s, rng.choice(places), rng.choice(objects)))
        corruptions.append(tuple(rng.sample([m for m in names if m not in (io, s)], 3)))
    clean = _encode(samples, lambda x: (x.io, x.s, x.s), tokenizer, prepend_bos, templates)
    abc = iter(corruptions)
    corrupt = _encode(samples, lambda x: next(abc), tokenizer, prepend_bos, templates)
    return clean, corrupt


def dataset_json(clean: IOIDataset, corrupt: IOIDataset, names: list[str]) -> dict:
    """Everything needed to recompute a result from the file alone: the prompts and the exact tokens run
    (right-padded with PAD), answers, positions, template groups and the vocabulary they were drawn from."""
    return {
        "prepend_bos": clean.prepend_bos, "pad_token_id": PAD,
        "prompts": clean.prompts, "corrupt_prompts": corrupt.prompts,
        "clean_tokens": clean.tokens.tolist(), "corrupt_tokens": corrupt.tokens.tolist(),
        "io_ids": clean.io_ids.tolist(), "s_ids": clean.s_ids.tolist(),
        "positions": {key: value.tolist() for key, value in clean.positions.items()},
        "template_ids": clean.template_ids.tolist(), "templates": clean.templates,
        "slot_names": {"clean": clean.names, "corrupt": corrupt.names}, "names": names,
    }
