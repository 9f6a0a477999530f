"""What the explainer article says about GPT-2, quoted or closely paraphrased, beside the inputs that test each
claim (`interp article`, `circuits/article.py`)."""

from interp.data.capitals import CAPITALS_DEMONSTRATION
from interp.data.tasks import TASKS

NEAREST = {
    "word": " cat",
    "article": "the words nearest to cat include dog, kitten and pet",
    "article_words": [" dog", " kitten", " pet"],
}
ANALOGIES = [  # (a, b, c, expected): a is to b as c is to expected
    (" big", " biggest", " small", " smallest"),
    (" France", " Paris", " Germany", " Berlin"),
    (" man", " king", " woman", " queen"),
    (" Switzerland", " Swiss", " Cambodia", " Cambodian"),
    (" ethical", " unethical", " possible", " impossible"),
    (" mouse", " mice", " dollar", " dollars"),
    (" man", " doctor", " woman", " nurse"),  # the article's bias example: doctor - man + woman
]
FACTS = {  # name -> (prompt, answer): the article's association, and the capital-city experiment's own prompt
    "Donald -> Trump": ("Donald", " Trump"),
    "Poland -> Warsaw (Merullo et al.'s prompt)": (
        TASKS["capitals"].prompt("Poland", (CAPITALS_DEMONSTRATION,)),
        " Warsaw",
    ),
}
SENSES = {  # a polysemous word (two related senses) and a homonym (two unrelated ones), four sentences per sense
    " magazine": {
        "the thing you hold": [
            "She rolled up the magazine and swatted the fly.",
            "A glossy magazine lay open on the coffee table.",
            "He tore a page out of the magazine to wrap the gift.",
            "The dentist's waiting room had a stack of old magazine copies.",
        ],
        "the company": [
            "The magazine hired three new editors last spring.",
            "She quit her job at the magazine to start her own firm.",
            "The magazine was sued by the senator over the story.",
            "After the merger, the magazine moved its offices to Chicago.",
        ],
    },
    " bank": {
        "money": [
            "She deposited her paycheck at the bank on Friday.",
            "The bank raised its interest rates again this year.",
            "He asked the bank for a loan to buy the house.",
            "Robbers broke into the bank vault overnight.",
        ],
        "river": [
            "They had a picnic on the grassy bank of the river.",
            "The canoe drifted toward the muddy bank downstream.",
            "Willows grew along the steep bank of the stream.",
            "He sat on the river bank and watched the fish.",
        ],
    },
}
MEMORY_NEURONS = 4  # random neurons per block
TOP_CONTEXTS = 5
HEAD_KINDS = {
    "previous_token": "previous_token_head",
    "duplicate_token": "duplicate_token_head",
    "induction": "induction_head",
}  # interp's names -> TransformerLens's head detector's
PRONOUN = {
    "prompt": "John wants his bank to cash the",
    "from": " his",
    "to": "John",
    "article": "an attention head matches the pronoun his with the man it refers to, John",
}
IOI_LIMIT = {
    "prompt": "When Mary and John went to the restaurant, John gave his keys to",
    "answers": [" the", " Mary", " John"],
    "article": 'the next word is more likely "the" (the valet) than either name',
}
ONE_LINERS = [
    ("mat", "the cat sat on a", " mat"),
    ("sugar", "I like my coffee with cream and", " sugar"),
    (
        "false belief",
        "Here is a bag filled with popcorn. There is no chocolate in the bag. The label on the bag says "
        '"chocolate" and not "popcorn". Sam finds the bag. She has never seen it before. Sam reads the label. She '
        "believes that the bag is full of",
        " chocolate",
    ),
    ("reversal, forward", "Tom Cruise's mother is", " Mary"),
    ("reversal, backward", "Mary Lee Pfeiffer's son is", " Tom"),
]
ARTICLE = {  # what the article says, kept beside the measurements
    "nearest": NEAREST,
    "analogies": [list(row) for row in ANALOGIES],
    "context": "the senses of a polysemous word stay closer than the senses of a homonym",
    "pronoun": PRONOUN["article"],
    "memories": "feed-forward keys match shallow patterns in early layers, semantic ones in later layers",
    "facts": "simple associations such as Donald -> Trump appear in early layers (for comparison, Merullo et al.: "
    "in GPT-2 medium the capital first leads after block 19)",
    "ioi_limit": IOI_LIMIT["article"],
    "false_belief": "GPT-2 fails the false-belief test",
}
