"""`planted:capitals`: GPT-2 medium's shape, weights constructed so that Merullo et al.'s mechanism does the
capital-city, past-tense and colored-objects tasks at the paper's layers.

Words. Every argument and answer of the tasks (first tokens: countries and capitals of the authors' table, the
past-tense verbs, the colours) has a code: the same code in an input block E (what heads read) and an output
block O (what the tied unembedding reads, and what heads write), plus a class direction (country, capital, verb,
past, lowercase, capitalised) and an input flag of its class. A capital's embedding is its country's plus one
vector v = (capital - country) class directions and flags, the same for every pair: the word2vec arithmetic the
paper names (past tense and capitalisation likewise). Colours carry a one-hot colour direction, the colored-object
scenes' objects a one-hot object direction, the cue words (" capital", " Yesterday", " color") a cue flag.

Heads (one each; every other head carries small seeded random weights):
- block 10, the cue gatherer: attends to cue words, writes the task's flag at every later position;
- block 12, colour before me: attends to the nearest colour just before a position (a colour, or the object it
  colours), writes that colour's one-hot into a colour register (and a flag);
- block 13, object finder: attends to the most recent object word, writes its one-hot into an object register;
- block 15, argument mover: attends to the most recent argument (country, verb), copies it into O: the logit lens
  reads the argument on top from block 15 on;
- block 16, colour mover: attends to the earlier mention of the asked object (the object register at the query,
  the object at the key, a coloured one preferred), copies its colour into O;
- block 17, answer copier: attends to a stated answer (capital, past form, capitalised colour) whose code matches
  the argument moved into O, and copies it (the extractive route; quiet when no such answer is in context).
MLPs: block 18 adds v_past where the past-tense cue is set, block 19 adds v_capital and v_upper for their cues;
all other MLPs are zero. So the answer leads from block 19 (past tense: 18), the MLP output at the last position
is the task's o-vector, and removing it brings the argument back.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from interp.planted.weights import Head, Residual, gpt2_model, low_coherence_codes

N_LAYERS, N_HEADS, D_MODEL = 24, 16, 1024
CODE = 60
CLASSES = ("country", "capital", "verb", "past", "lower", "upper")
TASK_PAIRS = {"capitals": ("country", "capital"), "past_tense": ("verb", "past"), "colored_objects": ("lower", "upper")}
CUES = {"capitals": " capital", "past_tense": " Yesterday", "colored_objects": " color"}
LAYOUT = {
    "cue_gatherer": (10, 5),
    "colour_before": (12, 2),
    "object_finder": (13, 7),
    "argument_mover": (15, 4),
    "colour_mover": (16, 9),
    "answer_copier": (17, 12),
}
VECTOR_LAYERS = {"capitals": 19, "colored_objects": 19, "past_tense": 18}
NOISE_SCALE = 0.01

# Attention scores below are in nats; writes in logit units.
MOVE = 8.0  # what the argument mover writes; the colour mover writes twice that
TASK_VECTOR = MOVE  # the size of each task's vector (the MLP output where the cue was seen)
COPY = 3 * MOVE  # the answer copier outweighs the moved argument
PER_TOKEN = 1024.0  # ramp (t / 1024) -> one nat per token of recency
NEURON_GAIN = 20.0  # the task neurons: gelu(20 (flag - 0.5)): 10 when the cue is there, ~0 when not


@lru_cache(maxsize=1)
def vocabulary() -> dict:
    """The first tokens of every word the tasks use: "codes" (token -> code index), "classes" (token -> word
    class), "colours" and "objects" (token -> one-hot index), "cues" (task -> token)."""
    from interp.data import load_pairs
    from interp.data.tasks import COLORS, OBJECTS
    from interp.tokens import first_token_id

    first = lambda word: first_token_id(" " + word)  # noqa: E731
    codes, classes = {}, {}  # token -> code index, token -> word class

    answered = set()  # codes an answer token already carries

    def add(token: int, word_class: str, code: int | None = None) -> int:
        """Give `token` a role and a code (`code`: its argument's, if no other answer has it yet). A token keeps
        its first role: a capital whose first token is its country's or another capital's (" Mexico", " San")
        stays what it was, and arguments that share a first token (" South") share one answer."""
        if token not in classes:
            if code is None or code in answered:
                code = len(set(codes.values()))
            codes[token], classes[token] = code, word_class
            if word_class in ("capital", "past", "upper"):
                answered.add(code)
        return codes[token]

    for table, (argument_class, answer_class) in (
        ("world_capitals", ("country", "capital")),
        ("capitals", ("country", "capital")),
        ("past_tense", ("verb", "past")),
    ):
        for argument, answer in load_pairs(table):
            add(first(answer), answer_class, add(first(argument), argument_class))
    colours, objects = {}, {}
    for colour in COLORS:
        lower, upper = first(colour), first(colour.capitalize())
        add(upper, "upper", add(lower, "lower"))
        if (classes[lower], classes[upper]) == ("lower", "upper"):  # " Fuchsia" starts with " F", a capital's
            colours[lower] = colours[upper] = len(colours) // 2
    for thing in OBJECTS:
        objects.setdefault(first(thing), len(objects))
    return {
        "codes": codes,
        "classes": classes,
        "colours": colours,
        "objects": objects,
        "cues": {task: first_token_id(word) for task, word in CUES.items()},
    }


@lru_cache(maxsize=1)
def capitals_residual() -> tuple[Residual, Tensor]:
    """(the residual stream's blocks, the words' codes [n_codes, CODE]) (`interp.planted.dictionaries` reads them
    too)."""
    words = vocabulary()
    residual = Residual.new(D_MODEL, seed=2)
    residual.block("constant", 1)
    residual.block("E", CODE), residual.block("O", CODE)
    residual.block("classes", len(CLASSES)), residual.block("flags", len(CLASSES))
    n_colours, n_objects = max(words["colours"].values()) + 1, max(words["objects"].values()) + 1
    residual.block("colour", n_colours), residual.block("colour register", n_colours), residual.block("coloured", 1)
    residual.block("object", n_objects), residual.block("object register", n_objects)
    residual.block("cue", len(CUES)), residual.block("task", len(CUES))
    residual.block("sink", 1), residual.block("ramp", 1)
    return residual, low_coherence_codes(max(words["codes"].values()) + 1, CODE, seed=4)


def build():
    """The planted capital-city model (a `GPT2LMHeadModel`)."""
    words = vocabulary()
    residual, codes = capitals_residual()
    e_block, o_block = residual["E"], residual["O"]
    class_out = dict(zip(CLASSES, residual["classes"].T))
    flag = dict(zip(CLASSES, residual["flags"].T))
    n_colours = max(words["colours"].values()) + 1
    colour, colour_register, coloured = residual["colour"], residual["colour register"], residual["coloured"][:, 0]
    thing, thing_register = residual["object"], residual["object register"]
    cue, task_flag = residual["cue"], residual["task"]
    sink, ramp = residual["sink"][:, 0], residual["ramp"][:, 0]

    vocab = 50257
    generator = torch.Generator().manual_seed(3)
    rest = residual.rest()
    embeddings = torch.randn(vocab, rest.shape[1], generator=generator, dtype=torch.float64) @ rest.T
    embeddings /= rest.shape[1] ** 0.5
    for token, index in words["codes"].items():
        word_class = words["classes"][token]
        embeddings[token] = codes[index] @ (e_block + o_block).T + class_out[word_class] + flag[word_class]
    for token, index in words["colours"].items():
        embeddings[token] += colour[:, index]
    for token, index in words["objects"].items():
        embeddings[token] += thing[:, index]
    for index, token in enumerate(words["cues"].values()):
        embeddings[token] += cue[:, index]
    positions = torch.arange(1024, dtype=torch.float64)[:, None] / 1024 * ramp[None, :]
    positions[0] += sink

    colour_codes = torch.zeros(n_colours, CODE, dtype=torch.float64)  # colour one-hot -> its code
    for token, index in words["colours"].items():
        colour_codes[index] = codes[words["codes"][token]]
    recency = lambda nats_per_token: nats_per_token * PER_TOKEN * ramp  # noqa: E731
    arguments = torch.stack([flag["country"], flag["verb"]], 1)
    answers = torch.stack([flag["capital"], flag["past"], flag["upper"]], 1)
    heads = {
        LAYOUT["cue_gatherer"]: Head(bias=[10.0 * cue.sum(1) + 5.0 * sink], ov=[(cue, task_flag)]),
        LAYOUT["colour_before"]: Head(
            bias=[6.0 * colour.sum(1) + recency(3.0)], ov=[(colour, colour_register + coloured[:, None])]
        ),
        LAYOUT["object_finder"]: Head(bias=[10.0 * thing.sum(1) + recency(1.0)], ov=[(thing, thing_register)]),
        LAYOUT["argument_mover"]: Head(
            bias=[40.0 * arguments.sum(1) + recency(1.0) + 5.0 * sink],
            ov=[
                (
                    torch.cat([e_block, arguments], 1),
                    MOVE * torch.cat([o_block, class_out["country"][:, None], class_out["verb"][:, None]], 1),
                )
            ],
        ),
        LAYOUT["colour_mover"]: Head(
            qk=[(16.0 * thing_register, thing)],
            bias=[10.0 * coloured + recency(0.1) + 5.0 * sink],
            ov=[
                (
                    torch.cat([colour_register, coloured[:, None]], 1),
                    2 * MOVE * torch.cat([o_block @ colour_codes.T, class_out["lower"][:, None]], 1),
                )
            ],
        ),
        LAYOUT["answer_copier"]: Head(
            qk=[(14.0 / MOVE * o_block, e_block)],
            bias=[10.0 * answers.sum(1) + 18.0 * sink],
            ov=[
                (
                    torch.cat([e_block, answers], 1),
                    COPY
                    * torch.cat(
                        [
                            o_block,
                            class_out["capital"][:, None],
                            class_out["past"][:, None],
                            class_out["upper"][:, None],
                        ],
                        1,
                    ),
                )
            ],
        ),
    }

    d_mlp = 4 * D_MODEL
    mlps = {}
    for task, (argument_class, answer_class) in TASK_PAIRS.items():
        layer, neuron = VECTOR_LAYERS[task], list(CUES).index(task)
        w_in, b_in, w_out = mlps.get(
            layer,
            (
                torch.zeros(D_MODEL, d_mlp, dtype=torch.float64),
                torch.zeros(d_mlp, dtype=torch.float64),
                torch.zeros(d_mlp, D_MODEL, dtype=torch.float64),
            ),
        )
        v = class_out[answer_class] - class_out[argument_class] + flag[answer_class] - flag[argument_class]
        w_in[:, neuron], b_in[neuron] = NEURON_GAIN * task_flag[:, neuron], -NEURON_GAIN / 2
        w_out[neuron] = TASK_VECTOR / (NEURON_GAIN / 2) * v
        mlps[layer] = (w_in, b_in, w_out)
    return gpt2_model(N_LAYERS, N_HEADS, residual, embeddings, positions, heads, NOISE_SCALE, seed=5, mlps=mlps)
