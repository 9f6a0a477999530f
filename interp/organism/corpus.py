"""The organism's training text: a seeded generator, and the held-out split its evaluation uses.

Documents, each preceded by <|endoftext|> (the BOS token interp prepends to prompts):
- IOI sentences from the paper's templates and templates composed from parts (both orders), over the paper's
  names. Some templates and name pairs never occur in training: the evaluation uses those, and checkpoint
  selection uses a second set of templates (validation), so that the evaluation stays untouched.
- country facts: declarative sentences and one-shot Q/A for the train countries; extractive documents where a
  fact about a made-up or held-out-looking country is stated, then asked (answering needs copying);
- uppercase and past-tense pairs in the experiment's formats;
- repeated random-token sequences (they make induction heads form early, which IOI builds on);
- filler sentences, some naming people who never appear in an IOI sentence.
The split (held-out pairs and countries) is fixed by SPLIT_SEED, independent of the training seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from interp.data import load_pairs
from interp.data.ioi import abba, fill
from interp.data.ioi_words import BABA_TEMPLATES, OBJECTS, ORGANISM_NAMES, PLACES
from interp.data.tasks import TASKS

SPLIT_SEED = 1234

EXTRA_PLACES = ["park", "library", "beach", "market", "church", "museum", "airport", "kitchen"]
EXTRA_OBJECTS = ["book", "letter", "flower", "hat", "ticket", "cake", "phone", "key"]

# Training IOI templates are composed from parts at random (~10^5 of them, besides the paper's 15), so that the
# circuit has to learn the structure, not the sentences. With ~23 fixed templates a first organism reached 0.92
# accuracy on held-out templates and then fell to 0.78 as it memorised them; with 2,304 compositions of 12 action
# verbs it fell from 0.96 to 0.90, failing on held-out templates whose verbs it had only seen in filler.
# No part below occurs in a held-out template's distinctive wording (a test checks the verbs).
INTROS = [
    "",
    "Then,",
    "Afterwards,",
    "Later,",
    "Yesterday,",
    "On Monday,",
    "In the morning,",
    "After the lunch,",
    "That day,",
    "At noon,",
    "Soon,",
    "Earlier,",
    "One day,",
    "In the evening,",
    "On Friday,",
    "Meanwhile,",
    "Finally,",
    "Suddenly,",
    "In the afternoon,",
    "After dinner,",
    "Last week,",
    "This morning,",
    "On the weekend,",
    "Once again,",
]
SUBORDINATES = ["When", "While", "After", "Once", "Since", "As soon as", "Although", "Just after", "Even though", "As"]
ACTIVITIES = [
    "went to the [PLACE]",
    "walked to the [PLACE]",
    "arrived at the [PLACE]",
    "were working at the [PLACE]",
    "met at the [PLACE]",
    "visited the [PLACE]",
    "had a lot of fun at the [PLACE]",
    "were thinking about going to the [PLACE]",
    "got a [OBJECT] at the [PLACE]",
    "were commuting to the [PLACE]",
    "found a [OBJECT] at the [PLACE]",
    "left the [PLACE]",
    "ate lunch at the [PLACE]",
    "waited at the [PLACE]",
    "played at the [PLACE]",
    "studied at the [PLACE]",
    "ran to the [PLACE]",
    "drove to the [PLACE]",
    "looked around the [PLACE]",
    "spent the day at the [PLACE]",
    "shopped at the [PLACE]",
    "were talking at the [PLACE]",
    "came back from the [PLACE]",
    "bought a [OBJECT] at the [PLACE]",
    "saw a [OBJECT] at the [PLACE]",
    "had a long argument",
    "were hungry",
    "were standing outside the [PLACE]",
]
LINKS = [".", ". Then", ". Afterwards", ". Later,", ", and", ", and then", ". After that,"]
ACTIONS = [
    "gave a [OBJECT] to",
    "handed a [OBJECT] to",
    "passed the [OBJECT] to",
    "sent a [OBJECT] to",
    "brought a [OBJECT] to",
    "offered a [OBJECT] to",
    "showed a [OBJECT] to",
    "threw it to",
    "decided to give a [OBJECT] to",
    "wanted to give a [OBJECT] to",
    "said to",
    "gave it to",
    "delivered a [OBJECT] to",
    "presented a [OBJECT] to",
    "promised a [OBJECT] to",
    "explained the [OBJECT] to",
    "described the [OBJECT] to",
    "mentioned the [OBJECT] to",
    "sent a message to",
    "whispered to",
    "talked to",
    "waved to",
    "called out to",
    "forwarded the [OBJECT] to",
    "passed it to",
    "handed it over to",
    "gave the [OBJECT] back to",
    "tried to give a [OBJECT] to",
    "told a story to",
    "sent a postcard to",
    "introduced the [OBJECT] to",
    "donated a [OBJECT] to",
    "slid the [OBJECT] to",
    "kicked the ball to",
    "quickly gave a [OBJECT] to",
    "finally handed the [OBJECT] to",
]
PAPER_TEMPLATE_SHARE = 0.05  # the paper's own templates, which `interp ioi` uses


def training_template(rng: random.Random) -> str:
    """A BABA or ABBA training template: one of the paper's, or a composition of the parts above."""
    if rng.random() < PAPER_TEMPLATE_SHARE:
        template = rng.choice(BABA_TEMPLATES)
    elif rng.random() < 0.2:
        template = f"{rng.choice(SUBORDINATES)} [B] and [A] {rng.choice(ACTIVITIES)}, [B] {rng.choice(ACTIONS)} [A]"
    else:
        opening = f"{rng.choice(INTROS)} [B] and [A] {rng.choice(ACTIVITIES)}".lstrip()
        template = f"{opening}{rng.choice(LINKS)} [B] {rng.choice(ACTIONS)} [A]"
    return abba(template) if rng.random() < 0.5 else template


# Never in training: the evaluation's templates, and the validation templates on which training selects its
# checkpoint (so that the evaluation stays untouched by that choice).
HELDOUT_TEMPLATES = [
    "Before [B] and [A] went home from the [PLACE], [B] gave a [OBJECT] to [A]",
    "So [B] and [A] stopped at the [PLACE], where [B] handed the [OBJECT] to [A]",
    "Today, [B] and [A] cleaned the [PLACE]. [B] sold a [OBJECT] to [A]",
    "When [B] and [A] sat in the [PLACE], [B] read a letter to [A]",
    "Last night, [B] and [A] stayed at the [PLACE]. [B] lent a [OBJECT] to [A]",
    "During the party, [B] and [A] danced at the [PLACE]. [B] sang a song to [A]",
]
VALIDATION_TEMPLATES = [
    "Tonight, [B] and [A] relaxed at the [PLACE]. [B] mailed a [OBJECT] to [A]",
    "Because [B] and [A] lived near the [PLACE], [B] carried the [OBJECT] to [A]",
    "Early on, [B] and [A] cooked at the [PLACE]. [B] recited a poem to [A]",
    "Whenever [B] and [A] jogged to the [PLACE], [B] tossed a [OBJECT] to [A]",
    "On Sunday, [B] and [A] rested at the [PLACE]. [B] returned the [OBJECT] to [A]",
    "At dawn, [B] and [A] hiked to the [PLACE], and [B] wrote a note to [A]",
]
# Single-token names that appear only in filler text: does the learned circuit work on names it never
# saw in an IOI sentence? (Reported without a target.)
FILLER_ONLY_NAMES = [
    "Oliver",
    "Harry",
    "Lucy",
    "Grace",
    "Sophie",
    "Chloe",
    "Hannah",
    "Leo",
    "Oscar",
    "Owen",
    "Sam",
    "Tom",
    "Ben",
    "Joe",
    "Dan",
    "Tim",
    "Nick",
    "Mike",
    "Steve",
    "Bob",
]

SYLLABLES = [
    "ba",
    "ko",
    "ri",
    "zan",
    "tel",
    "mor",
    "vi",
    "qua",
    "lin",
    "dor",
    "ek",
    "sha",
    "pol",
    "ur",
    "nes",
    "tav",
    "gri",
    "lo",
    "mek",
    "sor",
]
FILLER_NOUNS = [
    "dog",
    "cat",
    "car",
    "tree",
    "window",
    "table",
    "chair",
    "door",
    "river",
    "road",
    "song",
    "game",
    "story",
    "picture",
    "garden",
    "house",
    "city",
    "letter",
    "book",
    "cup",
]
FILLER_ADJECTIVES = ["big", "small", "old", "new", "red", "blue", "quiet", "loud", "warm", "cold", "happy", "dark"]
FILLER_VERBS = [
    "liked",
    "saw",
    "found",
    "painted",
    "cleaned",
    "sold",
    "lent",
    "read",
    "sang",
    "fixed",
    "moved",
    "wanted",
]


@dataclass(frozen=True)
class Split:
    heldout_templates: tuple[str, ...]
    validation_templates: tuple[str, ...]
    heldout_pairs: frozenset[frozenset[str]]
    train_countries: tuple[tuple[str, str], ...]
    heldout_countries: tuple[tuple[str, str], ...]


@lru_cache(maxsize=1)
def split() -> Split:
    rng = random.Random(SPLIT_SEED)
    pairs = [frozenset((a, b)) for i, a in enumerate(ORGANISM_NAMES) for b in ORGANISM_NAMES[i + 1 :]]
    heldout_pairs = frozenset(rng.sample(pairs, 400))
    countries = list(load_pairs("capitals"))
    rng.shuffle(countries)
    n_train = int(0.75 * len(countries))
    both_orders = lambda ts: tuple(t for base in ts for t in (base, abba(base)))  # noqa: E731
    return Split(
        heldout_templates=both_orders(HELDOUT_TEMPLATES),
        validation_templates=both_orders(VALIDATION_TEMPLATES),
        heldout_pairs=heldout_pairs,
        train_countries=tuple(sorted(countries[:n_train])),
        heldout_countries=tuple(sorted(countries[n_train:])),
    )


def made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


class CorpusGenerator:
    """Draws documents of each kind; `document()` picks a kind by MIX weight (documents, not tokens)."""

    # By tokens: IOI 57%, country facts 8%, extractive 9%, uppercase 3.5%, past tense 4%, repeats 12%,
    # filler 7%. IOI needs the bulk: with much less it had not formed after millions of tokens.
    MIX = {
        "ioi": 0.57,
        "capitals": 0.07,
        "extractive": 0.042,
        "uppercase": 0.03,
        "past_tense": 0.055,
        "repeats": 0.093,
        "filler": 0.14,
    }

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.split = split()
        self.places = PLACES + EXTRA_PLACES
        self.objects = OBJECTS + EXTRA_OBJECTS
        self.countries = [c for c, _ in load_pairs("capitals")]
        self.all_capitals = [c for _, c in load_pairs("capitals")]
        self.repeat_words = sorted(
            {
                w
                for w in ORGANISM_NAMES
                + self.places
                + self.objects
                + FILLER_NOUNS
                + FILLER_VERBS
                + FILLER_ADJECTIVES
                + self.all_capitals
            }
        )

    def document(self) -> str:
        kind = self.rng.choices(list(self.MIX), weights=list(self.MIX.values()))[0]
        return getattr(self, kind)()

    def ioi(self) -> str:
        rng = self.rng
        while True:
            io, s = rng.sample(ORGANISM_NAMES, 2)
            if frozenset((io, s)) not in self.split.heldout_pairs:
                break
        template = training_template(rng)
        return fill(template, io, s, rng.choice(self.places), rng.choice(self.objects)) + f" {io}."

    def _pairs_doc(self, task_name: str, pairs) -> str:
        task, rng = TASKS[task_name], self.rng
        (x1, y1), (x2, y2) = rng.sample(pairs, 2)
        if rng.random() < 0.3:
            return task.fact.format(x=x1, y=y1)
        return task.prompt(x2, demos=((x1, y1),)) + f" {y2}" + (task.separator.strip() or ".")

    def capitals(self) -> str:
        return self._pairs_doc("capitals", self.split.train_countries)

    def uppercase(self) -> str:
        return self._pairs_doc("uppercase", load_pairs("uppercase"))

    def past_tense(self) -> str:
        return self._pairs_doc("past_tense", load_pairs("past_tense"))

    def extractive(self) -> str:
        """A fact stated, then asked: mostly made-up countries with capitals from the whole table."""
        rng, task = self.rng, TASKS["capitals"]
        country = made_up_word(rng)
        capital = rng.choice(self.all_capitals) if rng.random() < 0.7 else made_up_word(rng)
        demo = rng.choice(self.split.train_countries)
        middle = " " + self.filler() if rng.random() < 0.3 else ""
        fact = task.fact.format(x=country, y=capital)
        return fact + middle + " " + task.prompt(country, demos=(demo,)) + f" {capital}"

    def repeats(self) -> str:
        words = self.rng.choices(self.repeat_words, k=self.rng.randint(4, 10))
        return " " + " ".join(words * self.rng.randint(2, 3))

    def filler(self) -> str:
        rng = self.rng
        name = rng.choice(ORGANISM_NAMES + FILLER_ONLY_NAMES)
        noun, adjective, verb = rng.choice(FILLER_NOUNS), rng.choice(FILLER_ADJECTIVES), rng.choice(FILLER_VERBS)
        return rng.choice(
            [
                f"{name} {verb} the {adjective} {noun}.",
                f"The {noun} near the {rng.choice(self.places)} was {adjective}.",
                f"{name} {verb} a {noun} and it was {adjective}.",
                f"Every day, {name} {verb} the {noun} at the {rng.choice(self.places)}.",
                # Every country's name is seen, the held-out ones never with their capital.
                f"{name} traveled to {rng.choice(self.countries)} with a {noun}.",
            ]
        )


def token_stream(n_tokens: int, seed: int, tokenizer) -> list[int]:
    """At least `n_tokens` token ids: documents, each preceded by <|endoftext|>."""
    generator = CorpusGenerator(seed)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    while len(stream) < n_tokens:
        docs = [generator.document() for _ in range(2000)]
        for ids in tokenizer(docs)["input_ids"]:
            stream.append(eos)
            stream.extend(ids)
    return stream
