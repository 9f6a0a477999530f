"""Prompt formats of the capital-city experiment's three tasks (Merullo et al.), shared by the experiment and
the organism's corpus so that both speak the same format.

A task maps an argument x to an answer y (" Poland" -> " Warsaw"). A prompt is zero or more demonstrations
followed by the query for x; the model should continue it with the answer.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
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
    "capitals": Task("capitals", "capitals", "Q: What is the capital of {x}?\nA:", "\n", "The capital of {x} is {y}."),
    "uppercase": Task("uppercase", "uppercase", "Q: What is the uppercase of {x}?\nA:", "\n",
                      "The uppercase of {x} is {y}."),
    "past_tense": Task("past_tense", "past_tense", "Today I {x}. Yesterday I", ". ", "The past tense of {x} is {y}."),
}
