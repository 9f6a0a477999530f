"""IOI's class rule, applied to any weighting of the prompts, and how stable its selections are.

Discovery (`circuits/ioi.py`) measures, per prompt, the logit difference of every path-patched run and the
attention the rule reads (`Evidence`). A head joins a class when the mean effect passes THRESHOLD; here the same
rule runs on the means under any weighting of the prompts at once: all of them (the classes users see), every
bootstrap resample (each head's selection frequency, the found set's Jaccard overlap across resamples), or half of
the templates (template hold-out). Nothing is re-run: a resample reweights the per-prompt values. Each step after
the first patches into the receivers found on all prompts, so a resample's later classes are conditional on them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from interp.stats import Bootstrap, jaccard, means_under, rounded

THRESHOLD = 0.05  # a path-patching effect counts when it moves the logit difference by 5% of its clean value
NAME_ATTENTION = 0.5  # a (negative) name mover puts more than half its attention from END on IO, S1 and S2
# The class rules: "threshold", the effect and the attention above (the paper's discovery steps); "mechanism" adds
# the paper's own checks of each class's mechanism (`MECHANISM`), which a head with a large effect but another
# mechanism fails.
RULES = ("threshold", "mechanism")
COPYING = 0.5  # mechanism: a name mover copies IO (its OV output puts IO in its top 5) on most prompts
CLASSES = (
    "name_mover",
    "negative_name_mover",
    "backup_name_mover",
    "s_inhibition",
    "induction",
    "duplicate_token",
    "previous_token",
)


# What the class rule reads, per prompt: `Evidence.effects` turns it into the relative effects of any weighting of
# the prompts (all of them, a bootstrap resample, a half of the templates).
STEPS = ("direct_effect", "into_name_mover_queries", "into_s_inhibition_values", "into_induction_keys")


@dataclass
class Evidence:
    """Discovery's measurements, one value per prompt (last axis): the clean logit difference, each path-patching
    step's patched logit difference per sender [layer, head, prompt], the heads' direct logit attribution before
    and after the name movers are knocked out, and the attention the class rule reads (from END to IO, S1, S2;
    from S2 to S1, S1+1)."""

    clean: np.ndarray
    patched: dict[str, np.ndarray]
    attention_end: np.ndarray  # [layer, head, 3, prompt]
    attention_s2: np.ndarray  # [layer, head, 2, prompt]
    dla_before: np.ndarray | None = None
    dla_after: np.ndarray | None = None
    # The mechanism rule's copy scores: [layer, head, 2, prompt], whether IO is among the top 5 / bottom 5 tokens
    # of the head's OV output at IO (`interp.circuits.ioi.copying`); None under the threshold rule.
    copying: np.ndarray | None = None

    @property
    def rule(self) -> str:
        return "threshold" if self.copying is None else "mechanism"

    def effects(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every quantity the class rule reads, as means under each row of `weights` [n_weightings, prompt]
        (the last axis of each result): path-patching effects and the backup rise relative to the clean logit
        difference, and the mean attention."""
        clean = means_under(self.clean, weights)
        scale = np.abs(clean)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {
                name: np.nan_to_num((means_under(values, weights) - clean) / scale, nan=0.0)
                for name, values in self.patched.items()
            }
            if self.dla_before is not None:
                out["backup_rise"] = np.nan_to_num(
                    (means_under(self.dla_after, weights) - means_under(self.dla_before, weights)) / scale, nan=0.0
                )
        out["attention_end"] = means_under(self.attention_end, weights)
        out["attention_s2"] = means_under(self.attention_s2, weights)
        if self.copying is not None:
            out["copying"] = means_under(self.copying, weights)
        return out

    def to_json(self) -> dict:
        return {
            "clean_logit_diff": rounded(self.clean),
            "patched_logit_diff": {k: rounded(v) for k, v in self.patched.items()},
            "attention_end_to_IO_S1_S2": rounded(self.attention_end),
            "attention_S2_to_S1_S1+1": rounded(self.attention_s2),
            **(
                {"dla_before": rounded(self.dla_before), "dla_after": rounded(self.dla_after)}
                if self.dla_before is not None
                else {}
            ),
            **({"copies_IO_top5_bottom5": rounded(self.copying)} if self.copying is not None else {}),
        }


# Each class's step and the direction its effect must pass THRESHOLD in (negative: patching the path breaks IOI).
CLASS_RULE = {
    "name_mover": ("direct_effect", -1),
    "negative_name_mover": ("direct_effect", 1),
    "s_inhibition": ("into_name_mover_queries", -1),
    "induction": ("into_s_inhibition_values", -1),
    "duplicate_token": ("into_s_inhibition_values", -1),
    "previous_token": ("into_induction_keys", -1),
    "backup_name_mover": ("backup_rise", 1),
}


def mechanism(effects: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The paper's checks of each class's mechanism, [layer, head, n_weightings] booleans per class: (negative)
    name movers attend from END to IO more than to S1 and S2 together and copy IO (positively, negatively) on most
    prompts; backups copy IO; S-inhibition heads attend from END to S2 more than to IO; induction heads put most
    of their attention from S2 on S1+1, duplicate-token heads on S1. Previous-token heads have no check here."""
    at_end, from_s2, copying = effects["attention_end"], effects["attention_s2"], effects["copying"]
    to_io = at_end[:, :, 0] > at_end[:, :, 1] + at_end[:, :, 2]
    copies, copies_against = copying[:, :, 0] > COPYING, copying[:, :, 1] > COPYING
    return {
        "name_mover": to_io & copies,
        "negative_name_mover": to_io & copies_against,
        "backup_name_mover": copies,
        "s_inhibition": at_end[:, :, 2] > at_end[:, :, 0],
        "induction": from_s2[:, :, 1] > NAME_ATTENTION,
        "duplicate_token": from_s2[:, :, 0] > NAME_ATTENTION,
        "previous_token": np.ones_like(copies),
    }


def class_masks(effects: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The class rule, on every weighting at once: {class: [layer, head, n_weightings] booleans}. A head joins a
    class when its effect passes THRESHOLD in the class's direction (`CLASS_RULE`); (negative) name movers must
    also put most of their attention from END on the names, and induction heads look from S2 more at S1+1 than
    at S1 (duplicate-token heads the other way); a step after the first counts only where the class it patches
    into was found (its receivers); each class excludes the heads of the classes found before it. With copy
    scores in `effects` (the mechanism rule), each class also needs its mechanism (`mechanism`)."""
    none = np.zeros(effects["direct_effect"].shape, dtype=bool)
    found_any = lambda mask: mask.any((0, 1), keepdims=True)  # noqa: E731
    checked = mechanism(effects) if "copying" in effects else None

    def passes(name: str) -> np.ndarray:
        step, sign = CLASS_RULE[name]
        return sign * effects[step] >= THRESHOLD if step in effects else none

    def works(name: str, mask: np.ndarray) -> np.ndarray:
        return mask if checked is None else mask & checked[name]

    names = effects["attention_end"].sum(2) > NAME_ATTENTION
    to_s1, to_s1_plus_1 = effects["attention_s2"][:, :, 0], effects["attention_s2"][:, :, 1]
    m = {name: works(name, passes(name) & names) for name in ("name_mover", "negative_name_mover")}
    m["s_inhibition"] = works("s_inhibition", passes("s_inhibition") & ~m["name_mover"] & found_any(m["name_mover"]))
    hits = passes("induction") & ~m["s_inhibition"] & ~m["name_mover"] & found_any(m["s_inhibition"])
    m["induction"] = works("induction", hits & (to_s1_plus_1 > to_s1))
    m["duplicate_token"] = works("duplicate_token", hits & ~(to_s1_plus_1 > to_s1))
    m["previous_token"] = works(
        "previous_token", passes("previous_token") & ~np.logical_or.reduce(list(m.values())) & found_any(m["induction"])
    )
    m["backup_name_mover"] = works(
        "backup_name_mover",
        passes("backup_name_mover") & ~m["name_mover"] & ~m["negative_name_mover"] & found_any(m["name_mover"]),
    )
    return {name: m[name] for name in CLASSES}


def classes_of(effects: dict[str, np.ndarray]) -> dict[str, list[tuple[int, int]]]:
    """The heads of each class under one weighting (effects with a last axis of 1), strongest first."""
    found = {}
    for name, mask in class_masks(effects).items():
        step, sign = CLASS_RULE[name]
        heads = [tuple(head) for head in np.argwhere(mask[..., 0]).tolist()]
        found[name] = sorted(heads, key=lambda head: (-sign * effects[step][head][0], head))
    return found


STABLE = 0.95  # a head is stable in its class when it is selected in at least 95% of the resamples


def found_set(classes: dict[str, list]) -> set[tuple[str, tuple[int, int]]]:
    return {(name, tuple(head)) for name, heads in classes.items() for head in heads}


def selection_stability(evidence: Evidence, bootstrap: Bootstrap, found: dict[str, list]) -> dict:
    """Per class, each head's selection frequency over the resamples ([layer][head]), those of the found heads,
    which of them are stable, the heads selected in some resamples but not on all prompts, and the Jaccard
    overlap of each resample's found set with the found set; with the effects' intervals per grid."""
    effects = evidence.effects(bootstrap.counts / bootstrap.n_prompts)
    masks = class_masks(effects)
    frequency = {name: bootstrap.fraction(mask) for name, mask in masks.items()}
    reference = found_set(found)
    overlaps = np.array(
        [
            jaccard(
                reference,
                {(name, tuple(head)) for name, mask in masks.items() for head in np.argwhere(mask[..., r]).tolist()},
            )
            for r in range(bootstrap.n_resamples)
        ]
    )
    of_found = {name: {f"{l}.{h}": float(frequency[name][l, h]) for l, h in heads} for name, heads in found.items()}
    return {
        "stable_at": STABLE,
        "frequency": {name: rounded(f, 4) for name, f in frequency.items()},
        "found": of_found,
        "stable": {name: [head for head, f in heads.items() if f >= STABLE] for name, heads in of_found.items()},
        "also_selected": {
            name: {
                f"{l}.{h}": float(frequency[name][l, h])
                for l, h in np.argwhere(frequency[name] > 0).tolist()
                if (l, h) not in set(map(tuple, found[name]))
            }
            for name in frequency
        },
        "jaccard": {"mean": float(overlaps.mean()), "ci": rounded(bootstrap.interval(overlaps))},
        "grid_intervals": {
            name: rounded(bootstrap.interval(effects[name])) for name in (*STEPS, "backup_rise") if name in effects
        },
        "conditional_on": "each path-patching step's receivers as found on all prompts",
    }


def template_halves(template_ids, seed: int) -> tuple[list[int], list[int]]:
    """The templates, shuffled by `seed` and cut in two halves."""
    templates = sorted(set(np.asarray(template_ids).tolist()))
    random.Random(seed).shuffle(templates)
    return sorted(templates[: len(templates) // 2]), sorted(templates[len(templates) // 2 :])


def half_classes(evidence: Evidence, template_ids, half: list[int]) -> dict[str, list[tuple[int, int]]]:
    """The classes the rule selects from the prompts of `half`'s templates alone."""
    weights = np.isin(np.asarray(template_ids), half).astype(np.float64)
    return classes_of(evidence.effects(weights[None] / weights.sum()))
