"""Prompt formats of the capital-city experiment's tasks (Merullo et al.), shared by the experiment and the
organism's corpus so that both speak the same format.

A table task maps an argument x to an answer y (" Poland" -> " Warsaw"). A prompt is zero or more demonstrations
followed by the query for x; the model should continue it with the answer.

The paper's "uppercasing" task is BIG-bench's Reasoning about Colored Objects: a scene of coloured objects, a
question about one of them, the colour capitalised as the answer (" brown" -> " Brown"). BIG-bench's examples
cannot be downloaded here, so `ColoredObjects` scenes are generated in exactly its format, from the task's own
colours and objects and surfaces written for interp.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class TableTask:
    name: str
    table: str  # the `interp.data.load_pairs` table of (x, y) pairs
    query: str  # what precedes the answer, with {x}
    separator: str  # between a demonstration's answer and the next query
    fact: str  # a declarative sentence stating the pair, with {x} and {y}

    def prompt(self, x: str, demos: tuple[tuple[str, str], ...] = ()) -> str:
        shots = "".join(self.query.format(x=a) + f" {b}" + self.separator for a, b in demos)
        return shots + self.query.format(x=x)

    def extractive_prompt(self, x: str, y: str, demos: tuple[tuple[str, str], ...] = ()) -> str:
        """The prompt with the fact stated first: the answer can be copied from the context."""
        return self.fact.format(x=x, y=y) + " " + self.prompt(x, demos)


TASKS = {
    "capitals": TableTask(
        "capitals", "capitals", "Q: What is the capital of {x}?\nA:", "\n", "The capital of {x} is {y}."
    ),
    "uppercase": TableTask(
        "uppercase", "uppercase", "Q: What is the uppercase of {x}?\nA:", "\n", "The uppercase of {x} is {y}."
    ),
    "past_tense": TableTask(
        "past_tense", "past_tense", "Today I {x}. Yesterday I", ". ", "The past tense of {x} is {y}."
    ),
}

# --- Reasoning about Colored Objects, generated in BIG-bench's format ------------------------------------------

COLORS = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "brown",
    "magenta",
    "fuchsia",
    "mauve",
    "teal",
    "turquoise",
    "burgundy",
    "silver",
    "gold",
    "black",
    "grey",
    "purple",
    "pink",
)  # the BIG-bench task's colours
# The colours asked about: those whose lowercase (the argument) and capitalised (the answer) forms are both one
# GPT-2 token, so that a first-token score is the whole answer. The other six still colour the other objects.
ASKED_COLORS = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "brown",
    "silver",
    "gold",
    "black",
    "grey",
    "purple",
    "pink",
)
OBJECTS = (
    "keychain",
    "pair of sunglasses",
    "sheet of paper",
    "dog leash",
    "cat toy",
    "fidget spinner",
    "cup",
    "notebook",
    "stress ball",
    "booklet",
    "envelope",
    "crayon",
    "plate",
    "teddy bear",
    "puzzle",
    "bracelet",
    "necklace",
    "jug",
    "paperclip",
    "textbook",
    "phone charger",
    "pen",
    "pencil",
    "scarf",
)
SURFACES = ("floor", "table", "desk", "nightstand", "bed", "couch")


@dataclass(frozen=True)
class ColoredObjects:
    """One scene: "On the {surface}, {viewer} see a {colour} {object}, ..., and a {colour} {object}. What color is
    the {asked object}?" The answer is the asked object's colour, capitalised."""

    surface: str
    viewer: str  # "I" or "you"
    things: tuple[tuple[str, str], ...]  # (colour, object)
    asked: int  # index into things

    @property
    def color(self) -> str:
        return self.things[self.asked][0]

    @property
    def answer(self) -> str:
        return self.color.capitalize()

    def question(self) -> str:
        listed = [f"{'an' if color[0] in 'aeiou' else 'a'} {color} {thing}" for color, thing in self.things]
        return (
            f"Q: On the {self.surface}, {self.viewer} see {', '.join(listed[:-1])}, and {listed[-1]}. "
            f"What color is the {self.things[self.asked][1]}?\nA:"
        )

    def prompt(self, demo: ColoredObjects) -> str:
        """One-shot, as BIG-bench's examples are read by the authors: the demonstration answered, then this."""
        return f"{demo.question()} {demo.answer}\n{self.question()}"

    def extractive_prompt(self, demo: ColoredObjects) -> str:
        """The prompt with the capitalised answer stated first: it can be copied from the context."""
        return f"The color of the {self.things[self.asked][1]} is {self.answer}. {self.prompt(demo)}"


# The demonstration of the paper's example prompt.
PAPER_COLORED_OBJECTS_DEMO = ColoredObjects(
    "floor",
    "I",
    (
        ("silver", "keychain"),
        ("red", "pair of sunglasses"),
        ("gold", "sheet of paper"),
        ("black", "dog leash"),
        ("blue", "cat toy"),
    ),
    0,
)


def random_scene(rng: random.Random, n_objects: int = 5) -> ColoredObjects:
    """n_objects distinct objects in distinct colours (five, as in the paper's example), one of them asked about
    in one of `ASKED_COLORS`."""
    asked_color = rng.choice(ASKED_COLORS)
    colors = [asked_color, *rng.sample([color for color in COLORS if color != asked_color], n_objects - 1)]
    rng.shuffle(colors)
    things = tuple(zip(colors, rng.sample(OBJECTS, n_objects)))
    return ColoredObjects(rng.choice(SURFACES), rng.choice(("I", "you")), things, colors.index(asked_color))
