"""`planted:ioi`: GPT-2 small's shape, weights constructed so that the IOI paper's mechanism solves IOI.

The residual stream (`interp.planted.weights.Residual`) holds, besides the constant direction:
- N, f: a name's identity, a 63-dim code per name, and "is a name" (the names' token embeddings);
- O: names moved to the output: the same codes in other directions. A name's token embedding holds its code in
  N and in O, so the tied unembedding reads O; the name movers write O (at every position: keeping it apart from N
  keeps the keys of the heads after them clean);
- R, g: "the previous token was name n", "the previous token was a name" (written by previous-token heads);
- D, r: "this position repeats name n", "this position repeats a name" (duplicate-token and induction heads);
- I: "do not attend to name n" (S-inhibition heads, at END);
- P: one-hot position (0-63) and a ramp t/64; position 0 is where idle heads put their attention (the sink).
Every other token has a small random embedding in the directions no block holds.

The heads, in the mechanism's order (scores in nats; `Head` packs them into 64 dimensions):
- previous-token: attend to position t-1; copy N, f -> R, g;
- duplicate-token: attend to an earlier position with the same name (code . code, earlier preferred through the
  ramp, the sink otherwise); copy N, f -> D, r;
- induction: attend to where R holds the query's name (K-composition with the previous-token heads); R, g -> D, r;
- S-inhibition: attend to where r is set (S2); copy D -> I;
- name mover: attend to names (f), minus the name I holds; copy N -> O (the logits); negative name mover: the
  same attention, writing against the name;
- backup name mover: the name mover's attention minus the names already written into O at the query: quiet
  while the name movers work (it attends to the sink), copying IO when they are knocked out.
Each class shares its writes among its heads so that every head carries a share a path-patching measurement can
see; the attention of the name movers is graded (not saturated) by the size of I for the same reason.
"""

from __future__ import annotations

import random
from functools import lru_cache

import torch
from torch import Tensor

from interp.data.ioi import PAPER_HEADS
from interp.planted.weights import MAX_POSITIONS, Head, Residual, gpt2_model, low_coherence_codes

N_LAYERS, N_HEADS, D_MODEL = 12, 12, 768
# The paper's heads, except the backups 9.0 and 9.7: they sit in the layer of the name movers 9.9 and 9.6, whose
# output they could not see, so they move to 11.0 and 11.7.
MOVED = {(9, 0): (11, 0), (9, 7): (11, 7)}
PAPER_LAYOUT = {name: [MOVED.get(head, head) for head in heads] for name, heads in PAPER_HEADS.items()}
CLASSES = tuple(PAPER_HEADS)
# The stages a seeded layout spreads over 12 layers in this order (each in its own layers); duplicate-token heads
# go anywhere before the S-inhibition stage, negative name movers anywhere after it.
STAGES = ("previous_token", "induction", "s_inhibition", "name_mover", "backup_name_mover")

NOISE_SCALE = 0.01  # every head without a role: small random weights
NAME_CODE = 63
# Scores (nats) and writes of each role.
PREV_SHIFT = 20.0  # previous-token: attention to t-1
DUP_MATCH, DUP_SINK, RAMP = 20.0, 8.0, 64.0  # duplicate-token: same name; sink; earlier keys preferred (1/token)
INDUCTION_MATCH, INDUCTION_SINK = 14.0, 8.0  # half a previous-token signal falls below the sink
INHIBIT_FLAG, INHIBIT_SINK = 12.0, 4.0  # S-inhibition: attention to r
NAME, INHIBITED = 10.0, 2.0  # name movers: names; minus the inhibited name (graded, so each S-inhibition head counts)
MOVE, NEGATIVE_MOVE = 8.0, 2.0  # what a name mover writes into O (logit units), and a negative one against it
BACKUP_NAME, BACKUP_SINK, BACKUP_INHIBITED, BACKUP_WRITTEN, BACKUP_MOVE = 13.0, 6.0, 10.0, 1.0, 1.2
# Noise: the heads outside the circuit (`minor_heads`). Spreads (std) of their attention scores (nats): on names,
# on the sink, and the query's code in a block . the key's name, per block (O holds names at MOVE's scale).
MINOR_NAME, MINOR_SINK = 4.0, 4.0
MINOR_READ = {"N": 4.0, "R": 4.0, "D": 4.0, "I": 4.0, "O": 4.0 / MOVE}
# Spreads of their write gains at noise level 1 into each name block (O: logit units, as MOVE) and each flag. They
# copy from the name blocks but leave N, the tokens' own identity, alone: heads copying a name onto itself compound
# into a scaling of every name, no longer one head's effect.
MINOR_WRITE = {"O": 4.0, "R": 0.2, "D": 0.2, "I": 0.2}
MINOR_SOURCES = ("N", "R", "D", "I")
FLAGS, MINOR_FLAG = ("f", "g", "r"), 0.1


def ioi_layout(seed: int | None = None) -> dict[str, list[tuple[int, int]]]:
    """Which head plays which role: the paper's heads (seed None) or a layout drawn from `seed` that keeps the
    order the mechanism needs (previous-token < induction; duplicate-token, induction < S-inhibition < name movers
    and negative name movers; every name mover < every backup)."""
    if seed is None:
        return {name: list(heads) for name, heads in PAPER_LAYOUT.items()}
    rng = random.Random(seed)
    cuts = [0, *sorted(rng.sample(range(1, N_LAYERS), len(STAGES) - 1)), N_LAYERS]
    stage_layers = {stage: range(cuts[i], cuts[i + 1]) for i, stage in enumerate(STAGES)}
    s_inhibition_start = cuts[STAGES.index("s_inhibition")]
    allowed = {
        **stage_layers,
        "duplicate_token": range(0, s_inhibition_start),
        "negative_name_mover": range(cuts[STAGES.index("name_mover")], N_LAYERS),
    }
    taken, layout = set(), {}
    for name in (
        "previous_token",
        "induction",
        "s_inhibition",
        "name_mover",
        "backup_name_mover",
        "duplicate_token",
        "negative_name_mover",
    ):
        free = [(layer, head) for layer in allowed[name] for head in range(N_HEADS) if (layer, head) not in taken]
        layout[name] = sorted(rng.sample(free, len(PAPER_LAYOUT[name])))
        taken.update(layout[name])
    return {name: layout[name] for name in CLASSES}


def ioi_edges(seed: int | None = None) -> list[str]:
    """The planted circuit's edges, named as EAP-IG / MIB name them (`input->a0.h1<q>`, `a2.h2->a5.h5<k>`,
    `a9.h9->logits`): the paths along which the names travel. Positional and constant terms (the same on every
    prompt) are left out."""
    layout = ioi_layout(seed)
    node = lambda head: f"a{head[0]}.h{head[1]}"  # noqa: E731
    edges = []

    def add(senders, receiver, inputs):
        edges.extend(
            f"{sender if isinstance(sender, str) else node(sender)}->{node(receiver)}<{part}>"
            for sender in senders
            for part in inputs
        )

    for head in layout["previous_token"]:
        add(["input"], head, "v")
    for head in layout["duplicate_token"]:
        add(["input"], head, "qkv")
    for head in layout["induction"]:
        add(["input"], head, "q")
        add(layout["previous_token"], head, "kv")
    for head in layout["s_inhibition"]:
        add(layout["duplicate_token"] + layout["induction"], head, "kv")
    movers = layout["name_mover"] + layout["negative_name_mover"]
    for head in movers + layout["backup_name_mover"]:
        add(layout["s_inhibition"], head, "q")
        add(["input"], head, "kv")
    for head in layout["backup_name_mover"]:
        add([mover for mover in movers if mover[0] < head[0]], head, "q")
    edges.extend(f"{node(head)}->logits" for head in movers + layout["backup_name_mover"])
    return edges


@lru_cache(maxsize=1)
def name_tokens() -> list[int]:
    """Every name the IOI datasets can draw (the paper's 99 and the organism's), as token ids."""
    from interp.data.ioi_words import ORGANISM_NAMES, PAPER_NAMES
    from interp.tokens import gpt2_tokenizer, single_token_id

    tokenizer = gpt2_tokenizer()
    return sorted({single_token_id(" " + name, tokenizer) for name in PAPER_NAMES + ORGANISM_NAMES})


def minor_heads(
    residual: Residual, layout: dict[str, list[tuple[int, int]]], noise: float, seed: int | None
) -> dict[tuple[int, int], Head]:
    """The terms every head outside the circuit carries at noise level `noise` (none at 0), drawn from `seed`
    whatever the level, so that a sweep scales the same heads. Attention (the same at every level): scores on
    "is a name" and on the sink at the key, and the query's code in one block . the key's name; output (times the
    level): one name block read, copied into every name block, and one flag read, written into every flag, each
    with a random signed gain."""
    if noise == 0:
        return {}
    generator = torch.Generator().manual_seed(2000 + (seed or 0))
    draw = lambda: torch.randn((), generator=generator, dtype=torch.float64).item()  # noqa: E731
    pick = lambda names: names[int(torch.randint(len(names), (), generator=generator))]  # noqa: E731
    circuit = {head for members in layout.values() for head in members}
    f, sink = residual["f"][:, 0], residual["P"][:, 0]
    minor = {}
    for head in [(layer, head) for layer in range(N_LAYERS) for head in range(N_HEADS) if (layer, head) not in circuit]:
        query = pick(tuple(MINOR_READ))
        name_write = sum(draw() * spread * residual[block] for block, spread in MINOR_WRITE.items())
        flag_write = sum(draw() * MINOR_FLAG * residual[block] for block in FLAGS)
        minor[head] = Head(
            qk=[(draw() * MINOR_READ[query] * residual[query], residual["N"])],
            bias=[draw() * MINOR_NAME * f + draw() * MINOR_SINK * sink],
            ov=[(residual[pick(MINOR_SOURCES)], noise * name_write), (residual[pick(FLAGS)], noise * flag_write)],
        )
    return minor


@lru_cache(maxsize=1)
def ioi_residual() -> tuple[Residual, Tensor, Tensor]:
    """(the residual stream's blocks, the name tokens, their codes [n_names, NAME_CODE]): the same for every
    layout (`interp.planted.dictionaries` reads them too)."""
    residual = Residual.new(D_MODEL)
    residual.block("constant", 1)
    residual.block("N", NAME_CODE), residual.block("f", 1)
    residual.block("O", NAME_CODE)
    residual.block("R", NAME_CODE), residual.block("g", 1)
    residual.block("D", NAME_CODE), residual.block("r", 1)
    residual.block("I", NAME_CODE)
    residual.block("P", MAX_POSITIONS), residual.block("ramp", 1)
    names = torch.tensor(name_tokens())
    return residual, names, low_coherence_codes(len(names), NAME_CODE)


def build(seed: int | None = None, noise: float = 0.0):
    """The planted IOI model (a `GPT2LMHeadModel`) with the roles at `ioi_layout(seed)` and the heads outside the
    circuit at noise level `noise` (`minor_heads`)."""
    residual, names, codes = ioi_residual()
    n, f, out, r_block, g, d_block, r, i_block, p, ramp = (
        residual[name] for name in ("N", "f", "O", "R", "g", "D", "r", "I", "P", "ramp")
    )
    sink = p[:, :1]

    vocab = 50257
    generator = torch.Generator().manual_seed(1)
    rest = residual.rest()
    embeddings = torch.randn(vocab, rest.shape[1], generator=generator, dtype=torch.float64) @ rest.T
    embeddings /= rest.shape[1] ** 0.5  # norm ~1, in the directions no block holds
    embeddings[names] = codes @ (n + out).T + f.T
    positions = torch.zeros(1024, D_MODEL, dtype=torch.float64)
    positions[:MAX_POSITIONS] = p.T
    positions += torch.clamp(torch.arange(1024, dtype=torch.float64) / MAX_POSITIONS, max=1.0)[:, None] * ramp.T

    layout = ioi_layout(seed)
    heads = {}
    share = lambda name: 1.0 / len(layout[name])  # noqa: E731
    marks = 1.0 / (len(layout["duplicate_token"]) + len(layout["induction"]))
    shift = torch.roll(p, 1, dims=1)  # column j: position j-1's direction (j >= 1)
    for head in layout["previous_token"]:
        heads[head] = Head(
            qk=[(PREV_SHIFT * p[:, 1:], shift[:, 1:])],
            ov=[(torch.cat([n, f], 1), share("previous_token") * torch.cat([r_block, g], 1))],
        )
    for head in layout["duplicate_token"]:
        heads[head] = Head(
            qk=[(DUP_MATCH * n, n)],
            bias=[DUP_SINK * sink[:, 0] - RAMP * ramp[:, 0]],
            ov=[(torch.cat([n, f], 1), marks * torch.cat([d_block, r], 1))],
        )
    for head in layout["induction"]:
        heads[head] = Head(
            qk=[(INDUCTION_MATCH * n, r_block)],
            bias=[INDUCTION_SINK * sink[:, 0]],
            ov=[(torch.cat([r_block, g], 1), marks * torch.cat([d_block, r], 1))],
        )
    for head in layout["s_inhibition"]:
        heads[head] = Head(
            bias=[INHIBIT_FLAG * r[:, 0] + INHIBIT_SINK * sink[:, 0]], ov=[(d_block, share("s_inhibition") * i_block)]
        )
    for name, move in (("name_mover", MOVE), ("negative_name_mover", -NEGATIVE_MOVE)):
        for head in layout[name]:
            heads[head] = Head(qk=[(-INHIBITED * i_block, n)], bias=[NAME * f[:, 0]], ov=[(n, move * out)])
    for head in layout["backup_name_mover"]:
        heads[head] = Head(
            qk=[(-BACKUP_INHIBITED * i_block - BACKUP_WRITTEN * out, n)],
            bias=[BACKUP_NAME * f[:, 0] + BACKUP_SINK * sink[:, 0]],
            ov=[(n, BACKUP_MOVE * out)],
        )
    return gpt2_model(
        N_LAYERS,
        N_HEADS,
        residual,
        embeddings,
        positions,
        heads,
        NOISE_SCALE,
        seed=1000 + (seed or 0),
        minor=minor_heads(residual, layout, noise, seed),
    )
