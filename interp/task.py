"""A task is data: clean/corrupted prompt pairs and, for each, the answers the model should give and the ones it
is compared with. Every measurement (patching, path patching, discovery, circuit evaluation) takes a `Task`.

interp's own format is auto-circuit's prompt JSON, with optional fields of its own (all optional but `prompts`):

    {"name": "ioi", "prepend_bos": false, "metric": "logit-diff",
     "word_idxs": {"IO": 2, "S1": 4, "end": 14},             # auto-circuit: named positions shared by all prompts
     "prompts": [{"clean": "When Mary and John ...", "corrupt": "When Alice and Bob ...",
                  "answers": [" Mary"], "wrong_answers": [" John"],   # strings (tokenized as given) or token ids
                  "group": 3,                                          # template/group id (mean ablation, bootstrap)
                  "positions": {"S2": 10}}]}                          # named positions of this prompt

A `.jsonl` file holds one prompt object per line. EAP-IG's CSVs are read as they are: greater-than
(`clean,corrupted,label`, label = the year's two digits YY: the answers are the years above it, "YY+1".."99", the
wrong answers "00".."YY") and IOI (`[index,]clean,corrupted,corrupted_hard,correct_idx,incorrect_idx`, token ids);
EAP-IG's tokenizer adds BOS, so those tasks say `prepend_bos: true`.

A bad file is one line naming the file, the prompt (JSON index, or line number) and the field.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError
from interp.tokens import GPT2_BOS, encode, prompt_ids

Answer = str | int
PAD = GPT2_BOS  # right padding: a causal model never sees it from the positions it reads

EAP_IG_GREATER_THAN = ["clean", "corrupted", "label"]
EAP_IG_IOI = ["clean", "corrupted", "corrupted_hard", "correct_idx", "incorrect_idx"]


@dataclass(frozen=True)
class Pair:
    clean: str | list[int]
    corrupt: str | list[int]
    answers: list[Answer]
    wrong_answers: list[Answer]
    group: str | int | None = None
    positions: dict[str, int] | None = None
    where: str = ""  # where it was read from, for errors: "prompts[3]", "line 5"

    def to_json(self) -> dict:
        data = {
            "clean": self.clean,
            "corrupt": self.corrupt,
            "answers": self.answers,
            "wrong_answers": self.wrong_answers,
        }
        if self.group is not None:
            data["group"] = self.group
        if self.positions:
            data["positions"] = self.positions
        return data


@dataclass
class Task:
    name: str
    pairs: list[Pair]
    source: str = ""  # the file it was read from, or the interp builder that made it
    format: str = "interp"  # interp, jsonl, auto-circuit, eap-ig-greater-than, eap-ig-ioi
    prepend_bos: bool | None = None  # as the task's authors tokenized it; None: the command's default
    metric: str | None = None  # the metric the task is meant for (greater-than: prob-diff); None: logit-diff
    word_idxs: dict[str, int] | None = None
    seq_labels: list[str] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def to_json(self) -> dict:
        data = {"format": "interp-task", "name": self.name}
        for key in ("prepend_bos", "metric", "word_idxs", "seq_labels"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return {**data, "prompts": [pair.to_json() for pair in self.pairs]}

    def save(self, path: str | Path) -> Path:
        from interp.results import write_json

        return write_json(path, self.to_json())

    def tokenize(
        self, tokenizer=None, prepend_bos: bool | None = None, n_vocab: int = 50257, n_ctx: int | None = None
    ) -> TaskTokens:
        """Token tensors of every pair, right-padded; `prepend_bos` None takes the task's own (else True)."""
        bos = self.prepend_bos if prepend_bos is None else prepend_bos
        bos = True if bos is None else bos
        clean, corrupt, answers, wrongs = [], [], [], []
        for pair in self.pairs:
            here = f"{self.source}: {pair.where}"
            c = prompt_of(pair.clean, tokenizer, bos, n_vocab, f"{here}: clean")
            k = prompt_of(pair.corrupt, tokenizer, bos, n_vocab, f"{here}: corrupt")
            if len(c) != len(k):
                raise InterpError(
                    f"{here}: clean is {len(c)} tokens and corrupt {len(k)}: patching needs the same length"
                )
            if n_ctx is not None and len(c) > n_ctx:
                raise InterpError(f"{here}: clean is {len(c)} tokens; the model's context is {n_ctx}")
            clean.append(c)
            corrupt.append(k)
            answers.append(answer_ids(pair.answers, tokenizer, n_vocab, f"{here}: answers"))
            wrongs.append(answer_ids(pair.wrong_answers, tokenizer, n_vocab, f"{here}: wrong_answers"))
        groups = [pair.group for pair in self.pairs]
        labels = sorted({g for g in groups if g is not None}, key=lambda g: (isinstance(g, str), g))
        return TaskTokens(
            clean=padded(clean, PAD),
            corrupt=padded(corrupt, PAD),
            end=torch.tensor([len(c) - 1 for c in clean]),
            answers=padded(answers, -1),
            wrong=padded(wrongs, -1),
            groups=torch.tensor([-1 if g is None else labels.index(g) for g in groups]),
            prepend_bos=bos,
            positions={name: torch.tensor(idx) for name, idx in named_positions(self).items()},
        )


@dataclass
class TaskTokens:
    """A tokenized task: clean and corrupt [n, pos] right-padded with PAD, each prompt's last real position (`end`,
    where metrics read), answer and wrong-answer ids [n, k] padded with -1, group ids (-1: none)."""

    clean: Int[Tensor, "n pos"]
    corrupt: Int[Tensor, "n pos"]
    end: Int[Tensor, " n"]
    answers: Int[Tensor, "n n_answers"]
    wrong: Int[Tensor, "n n_wrong"]
    groups: Int[Tensor, " n"]
    prepend_bos: bool
    positions: dict[str, Int[Tensor, " n"]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clean)

    @property
    def same_length(self) -> bool:
        return bool((self.end == self.end[0]).all())


def padded(rows: list[list[int]], value: int) -> Tensor:
    out = torch.full((len(rows), max(len(row) for row in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def prompt_of(prompt: str | list[int], tokenizer, prepend_bos: bool, n_vocab: int, what: str) -> list[int]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InterpError(f"{what} is empty")
        return prompt_ids(prompt, tokenizer, prepend_bos=prepend_bos)
    for token in prompt:
        check_id(token, n_vocab, what)
    if not prompt:
        raise InterpError(f"{what} is empty")
    return [GPT2_BOS] * prepend_bos + list(prompt)


def check_id(token, n_vocab: int, what: str) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < n_vocab:
        raise InterpError(f"{what}: {token!r} is not a token id of the model's vocabulary (0..{n_vocab - 1})")
    return token


def answer_ids(answers: list[Answer], tokenizer, n_vocab: int, what: str) -> list[int]:
    if not answers:
        raise InterpError(f"{what} is empty: the metric needs at least one")
    ids = []
    for answer in answers:
        if isinstance(answer, str):
            tokens = encode(answer, tokenizer)
            if len(tokens) != 1:
                raise InterpError(
                    f"{what}: {answer!r} is {len(tokens)} GPT-2 tokens, not one (give multi-token "
                    "answers as the list of their first tokens, or as ids)"
                )
            ids.append(tokens[0])
        else:
            ids.append(check_id(answer, n_vocab, what))
    return ids


def named_positions(task: Task) -> dict[str, list[int]]:
    """Named positions per prompt: the task's shared `word_idxs` overridden by each prompt's own `positions`."""
    names = set(task.word_idxs or {}) | {name for pair in task.pairs for name in (pair.positions or {})}
    out = {}
    for name in sorted(names):
        values = [(pair.positions or {}).get(name, (task.word_idxs or {}).get(name)) for pair in task.pairs]
        if all(value is not None for value in values):
            out[name] = values
    return out


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_task(path: str | Path) -> Task:
    """A task file in any of the formats above, chosen by its extension (.json, .jsonl, .csv)."""
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"task file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InterpError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if suffix == ".csv":
        return read_eap_ig_csv(path, text)
    if suffix == ".jsonl":
        lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        pairs = [pair_of(json_value(path, line, f"line {number}"), path, f"line {number}") for number, line in lines]
        if not pairs:
            raise InterpError(f"{path}: no prompts")
        return Task(path.stem, pairs, str(path), "jsonl")
    if suffix == ".json":
        return task_of(json_value(path, text, "the file"), path)
    raise InterpError(f"{path}: unknown task format {suffix!r}; use .json, .jsonl or .csv")


def json_value(path: Path, text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InterpError(f"{path}: {where}: not valid JSON ({error.msg}, line {error.lineno})") from None


def task_of(data, path: Path) -> Task:
    if not isinstance(data, dict) or "prompts" not in data:
        raise InterpError(f"{path}: a task file is a JSON object with a 'prompts' list")
    prompts = data["prompts"]
    if not isinstance(prompts, list) or not prompts:
        raise InterpError(f"{path}: 'prompts' must be a non-empty list")
    word_idxs = data.get("word_idxs")
    if word_idxs is not None and not (
        isinstance(word_idxs, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in word_idxs.values())
    ):
        raise InterpError(f"{path}: 'word_idxs' must map names to positions (integers)")
    prepend_bos = data.get("prepend_bos")
    if prepend_bos is not None and not isinstance(prepend_bos, bool):
        raise InterpError(f"{path}: 'prepend_bos' must be true or false")
    return Task(
        name=str(data.get("name", path.stem)),
        pairs=[pair_of(prompt, path, f"prompts[{i}]") for i, prompt in enumerate(prompts)],
        source=str(path),
        format="interp" if data.get("format") == "interp-task" else "auto-circuit",
        prepend_bos=prepend_bos,
        metric=data.get("metric"),
        word_idxs=word_idxs,
        seq_labels=data.get("seq_labels"),
    )


def pair_of(item, path: Path, where: str) -> Pair:
    here = f"{path}: {where}"
    if not isinstance(item, dict):
        raise InterpError(f"{here}: a prompt is an object with clean, corrupt, answers and wrong_answers")
    for key in ("clean", "corrupt", "answers", "wrong_answers"):
        if key not in item:
            raise InterpError(f"{here}: missing field '{key}'")
    for key in ("clean", "corrupt"):
        if not isinstance(item[key], str) and not is_id_list(item[key]):
            raise InterpError(f"{here}: '{key}' must be a string or a list of token ids")
    for key in ("answers", "wrong_answers"):
        value = item[key]
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]  # one answer given bare
        if not isinstance(value, list) or not all(isinstance(a, (str, int)) and not isinstance(a, bool) for a in value):
            raise InterpError(f"{here}: '{key}' must be a list of strings or token ids")
        if not value:
            raise InterpError(f"{here}: '{key}' is empty: the metric needs at least one")
        item = {**item, key: value}
    positions = item.get("positions")
    if positions is not None and not (
        isinstance(positions, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in positions.values())
    ):
        raise InterpError(f"{here}: 'positions' must map names to positions (integers)")
    group = item.get("group")
    if group is not None and not isinstance(group, (str, int)):
        raise InterpError(f"{here}: 'group' must be a string or an integer")
    return Pair(item["clean"], item["corrupt"], item["answers"], item["wrong_answers"], group, positions, where)


def is_id_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def read_eap_ig_csv(path: Path, text: str) -> Task:
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise InterpError(f"{path}: empty file")
    header = rows[0][1:] if rows[0] and rows[0][0] == "" else rows[0]  # pandas writes its index as a column
    offset = len(rows[0]) - len(header)
    if header[: len(EAP_IG_IOI)] == EAP_IG_IOI:
        shape = "eap-ig-ioi"
    elif header[: len(EAP_IG_GREATER_THAN)] == EAP_IG_GREATER_THAN:
        shape = "eap-ig-greater-than"
    else:
        raise InterpError(
            f"{path}: line 1: the header {','.join(rows[0])!r} is neither EAP-IG's greater-than "
            f"({','.join(EAP_IG_GREATER_THAN)}) nor its IOI ({','.join(EAP_IG_IOI)})"
        )
    pairs = []
    for number, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"line {number}"
        if len(row) < len(rows[0]):
            missing = header[len(row) - offset] if len(row) >= offset else header[0]
            raise InterpError(f"{path}: {where}: missing column '{missing}'")
        cells = dict(zip(header, row[offset:]))
        if shape == "eap-ig-ioi":
            ids = [csv_int(path, where, cells, key) for key in ("correct_idx", "incorrect_idx")]
            pairs.append(Pair(cells["clean"], cells["corrupted"], [ids[0]], [ids[1]], where=where))
        else:
            label = csv_int(path, where, cells, "label")
            if not 0 <= label <= 98:
                raise InterpError(
                    f"{path}: {where}: label {label} is not a two-digit year 00..98 (the answers are "
                    "the years above it)"
                )
            pairs.append(
                Pair(cells["clean"], cells["corrupted"], years(label + 1, 100), years(0, label + 1), where=where)
            )
    if not pairs:
        raise InterpError(f"{path}: no prompts")
    name = "greater-than" if shape == "eap-ig-greater-than" else "ioi"
    return Task(
        name,
        pairs,
        str(path),
        shape,
        prepend_bos=True,
        metric="prob-diff" if shape == "eap-ig-greater-than" else "logit-diff",
    )


def csv_int(path: Path, where: str, cells: dict, key: str) -> int:
    try:
        return int(cells[key])
    except ValueError:
        raise InterpError(f"{path}: {where}: '{key}' is {cells[key]!r}, not an integer") from None


def years(start: int, stop: int) -> list[str]:
    """Two-digit years as GPT-2 tokens ("00".."99", no leading space: they follow the century's digits)."""
    return [f"{year:02d}" for year in range(start, stop)]
