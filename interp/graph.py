"""The edge graph of a GPT-2 and circuits in it, named and laid out as EAP-IG and MIB do, so circuits can be
exchanged with them.

Writers (forward nodes) put something into the residual stream: `input` (token + position embeddings), every head
`a{layer}.h{head}` (its output z @ W_O, without the layer's b_O, which belongs to no node), every MLP `m{layer}`.
Readers (backward nodes) take their own copy of the residual stream: every head through three inputs
`a{layer}.h{head}<q>`, `<k>`, `<v>`, every MLP `m{layer}`, and `logits` (the final residual, before ln_final).
An edge joins a writer to every reader after it: heads of layer l read the writers of layers < l; MLP l also
reads layer l's heads; logits read everything. GPT-2 small: 158 nodes, 32,491 edges.

Scores and membership are [n_writers, n_readers] matrices (EAP-IG's layout: writer index 1 + l(H+1) + h for heads,
1 + l(H+1) + H for MLPs; reader index l(3H+1) + iH + h for input i of q, k, v, l(3H+1) + 3H for MLPs, last for
logits), with `real` marking the pairs that are edges. Selection follows MIB: keep the top n edges by |score|
(or grow them greedily from the logits), then prune until every kept edge lies on a path from input to logits.
"""

from __future__ import annotations

import heapq
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import InterpError
from interp.results import atomic_path

QKV = "qkv"
EDGE_NAME = re.compile(r"^(input|a\d+\.h\d+|m\d+)->(a\d+\.h\d+<[qkv]>|m\d+|logits)$")


@dataclass(frozen=True)
class Graph:
    """The edge graph of a model with `n_layers` layers of `n_heads` heads (sequential attention and MLP)."""

    n_layers: int
    n_heads: int
    d_model: int

    @classmethod
    def of(cls, model) -> Graph:
        cfg = model.cfg
        return cls(cfg.n_layers, cfg.n_heads, cfg.d_model)

    # Writers and readers by index

    @property
    def n_writers(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_readers(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1) + 1

    def head_writer(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_writer(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def head_reader(self, layer: int, head: int, part: str) -> int:
        return layer * (3 * self.n_heads + 1) + QKV.index(part) * self.n_heads + head

    def mlp_reader(self, layer: int) -> int:
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads

    @property
    def logits_reader(self) -> int:
        return self.n_readers - 1

    def layer_readers(self, layer: int) -> slice:
        """Layer `layer`'s readers: its heads' q, k, v inputs, then its MLP."""
        first = layer * (3 * self.n_heads + 1)
        return slice(first, first + 3 * self.n_heads + 1)

    def writers_before(self, reader: int) -> int:
        """How many writers come before a reader (they are writers 0..n-1): its edges' sources."""
        if reader == self.logits_reader:
            return self.n_writers
        layer, offset = divmod(reader, 3 * self.n_heads + 1)
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if offset == 3 * self.n_heads else 0)

    @property
    def real(self) -> Bool[Tensor, "n_writers n_readers"]:
        """Which (writer, reader) pairs are edges."""
        n_before = torch.tensor([self.writers_before(reader) for reader in range(self.n_readers)])
        return torch.arange(self.n_writers)[:, None] < n_before[None, :]

    @property
    def n_edges(self) -> int:
        """n_layers * 3H * (1 + l(H+1) summed over l) + MLPs' + logits'; 32,491 for GPT-2 small."""
        return int(self.real.sum())

    # Names

    def writer_names(self) -> list[str]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{head}" for head in range(self.n_heads)] + [f"m{layer}"]
        return names

    def reader_names(self) -> list[str]:
        names = []
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{head}<{part}>" for part in QKV for head in range(self.n_heads)] + [f"m{layer}"]
        return names + ["logits"]

    def node_names(self) -> list[str]:
        return self.writer_names() + ["logits"]

    def edge_list(self) -> list[tuple[int, int]]:
        """Every edge as (writer, reader), in EAP-IG's order: layer by layer, each writer into every head's q, k, v,
        then every writer into the MLP; last, every writer into the logits."""
        edges = []
        for layer in range(self.n_layers):
            edges += [
                (writer, self.head_reader(layer, head, part))
                for writer in range(self.head_writer(layer, 0))
                for head in range(self.n_heads)
                for part in QKV
            ]
            edges += [(writer, self.mlp_reader(layer)) for writer in range(self.mlp_writer(layer))]
        return edges + [(writer, self.logits_reader) for writer in range(self.n_writers)]

    def edge_names(self) -> list[str]:
        writers, readers = self.writer_names(), self.reader_names()
        return [f"{writers[w]}->{readers[r]}" for w, r in self.edge_list()]

    def edge_index(self, name: str) -> tuple[int, int]:
        """(writer, reader) of an edge named `a0.h1->a2.h3<q>`; a clear error for a name not in this graph."""
        match = EDGE_NAME.match(name)
        if match is None:
            raise InterpError(f"{name!r} is not an edge name like 'a0.h1->a2.h3<q>', 'input->m0' or 'm3->logits'")
        writer_name, reader_name = match.groups()
        writer, reader = self.writer_index(writer_name), self.reader_index(reader_name)
        if writer is None or reader is None or writer >= self.writers_before(reader):
            raise InterpError(f"{name!r} is not an edge of a {self.n_layers}-layer, {self.n_heads}-head model")
        return writer, reader

    def writer_index(self, name: str) -> int | None:
        if name == "input":
            return 0
        numbers = self.node_numbers(name)
        if numbers is None:
            return None
        return self.head_writer(*numbers) if name.startswith("a") else self.mlp_writer(*numbers)

    def reader_index(self, name: str) -> int | None:
        if name == "logits":
            return self.logits_reader
        numbers = self.node_numbers(name)
        if numbers is None:
            return None
        return self.head_reader(*numbers, name[-2]) if name.startswith("a") else self.mlp_reader(*numbers)

    def node_numbers(self, name: str) -> list[int] | None:
        """[layer, head] of `a{layer}.h{head}...`, [layer] of `m{layer}`; None when out of this model's range."""
        numbers = [int(n) for n in re.findall(r"\d+", name)]
        if numbers[0] >= self.n_layers or (len(numbers) == 2 and numbers[1] >= self.n_heads):
            return None
        return numbers

    def mask(self, edge_names) -> Bool[Tensor, "n_writers n_readers"]:
        """The membership matrix of a list of edge names."""
        mask = torch.zeros(self.n_writers, self.n_readers, dtype=torch.bool)
        for name in edge_names:
            mask[self.edge_index(name)] = True
        return mask

    def reader_writer(self) -> Tensor:
        """For each reader, the writer of the same node (heads' q/k/v inputs and MLPs), -1 for logits."""
        node = torch.full((self.n_readers,), -1)
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                for part in QKV:
                    node[self.head_reader(layer, head, part)] = self.head_writer(layer, head)
            node[self.mlp_reader(layer)] = self.mlp_writer(layer)
        return node


@dataclass
class Circuit:
    """Edge scores over a graph and the edges kept (`in_graph`), as EAP-IG and MIB hold them."""

    graph: Graph
    scores: Float[Tensor, "n_writers n_readers"]
    in_graph: Bool[Tensor, "n_writers n_readers"]

    @classmethod
    def of_scores(cls, graph: Graph, scores: Tensor) -> Circuit:
        scores = scores.detach().float().cpu().masked_fill(~graph.real, 0.0)
        return cls(graph, scores, torch.zeros_like(graph.real))

    @property
    def n_edges(self) -> int:
        return int(self.in_graph.sum())

    def edges(self) -> list[str]:
        """The kept edges' names, highest |score| first."""
        writers, readers = self.graph.writer_names(), self.graph.reader_names()
        kept = self.in_graph.nonzero().tolist()
        kept.sort(key=lambda wr: -abs(float(self.scores[wr[0], wr[1]])))
        return [f"{writers[w]}->{readers[r]}" for w, r in kept]

    def top_n(self, n: int, prune: bool = True) -> Circuit:
        """The n edges of highest |score| (then pruned: MIB's `apply_topn`)."""
        kept = Circuit(self.graph, self.scores, top_n_masks(self.graph, self.scores, n))
        return kept.pruned() if prune else kept

    def greedy(self, n: int, prune: bool = True) -> Circuit:
        """n edges grown from the logits (MIB's `apply_greedy`): the candidates are the edges into nodes already
        in the circuit, and the one of highest |score| joins, bringing its writer's incoming edges in as
        candidates."""
        graph = self.graph
        if not 0 <= n <= graph.n_edges:
            raise InterpError(f"cannot keep {n} edges of a graph of {graph.n_edges}")
        readers_of = {}  # a writer's own readers (its inputs)
        for reader, writer in enumerate(graph.reader_writer().tolist()):
            readers_of.setdefault(writer, []).append(reader)
        magnitude = self.scores.abs()
        in_graph = torch.zeros_like(graph.real)
        heap, joined = [], set()

        def open_reader(reader: int) -> None:
            for writer in range(graph.writers_before(reader)):
                heapq.heappush(heap, (-float(magnitude[writer, reader]), writer, reader))

        open_reader(graph.logits_reader)
        for _ in range(n):
            negative, writer, reader = heapq.heappop(heap)
            if negative == 0:  # only edges of no effect are left (see `top_n_masks`)
                break
            in_graph[writer, reader] = True
            if writer not in joined:
                joined.add(writer)
                for own in readers_of.get(writer, []):
                    open_reader(own)
        kept = Circuit(graph, self.scores, in_graph)
        return kept.pruned() if prune else kept

    def pruned(self) -> Circuit:
        """Edges on a path from input to logits only (MIB's `prune`; `pruned_masks`)."""
        return Circuit(self.graph, self.scores, pruned_masks(self.graph, self.in_graph))

    def nodes_in_graph(self) -> dict[str, bool]:
        """Every node and whether it is in the circuit (input and logits always are, as MIB writes them)."""
        has_out = self.in_graph.any(1).tolist()
        names = self.graph.writer_names()
        return {**{name: bool(has_out[i]) or name == "input" for i, name in enumerate(names)}, "logits": True}

    def heads(self) -> list[tuple[int, int]]:
        """The heads that write into the circuit."""
        writes = self.in_graph.any(1)
        return [
            (layer, head)
            for layer in range(self.graph.n_layers)
            for head in range(self.graph.n_heads)
            if writes[self.graph.head_writer(layer, head)]
        ]

    def to_json(self) -> dict:
        """EAP-IG's `Graph.to_json` / MIB's submission format."""
        graph = self.graph
        return {
            "cfg": {
                "n_layers": graph.n_layers,
                "n_heads": graph.n_heads,
                "parallel_attn_mlp": False,
                "d_model": graph.d_model,
            },
            "nodes": {name: {"in_graph": flag} for name, flag in self.nodes_in_graph().items()},
            "edges": {
                name: {"score": float(self.scores[w, r]), "in_graph": bool(self.in_graph[w, r])}
                for name, (w, r) in zip(graph.edge_names(), graph.edge_list())
            },
        }

    def save(self, path: str | Path) -> Path:
        text = json.dumps(self.to_json())
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        return Path(path)


# Selection on many score matrices at once (a circuit's own, or every bootstrap resample's): leading batch axes.


def top_n_masks(
    graph: Graph, scores: Float[Tensor, "*batch n_writers n_readers"], n: int
) -> Bool[Tensor, "*batch n_writers n_readers"]:
    """Membership of the n real edges of highest |score| in each score matrix (ties in index order, as a stable
    sort), before pruning. An edge scored exactly 0 carries no evidence and never joins (MIB's `apply_topn` would
    fill a budget with such ties in index order, bringing in nodes that do nothing): a budget is at most n edges."""
    if not 0 <= n <= graph.n_edges:
        raise InterpError(f"cannot keep {n} edges of a graph of {graph.n_edges}")
    flat = scores.abs().flatten(-2).masked_fill(~graph.real.flatten().to(scores.device), -1.0)
    if n == 0:
        return torch.zeros_like(flat, dtype=torch.bool).view(scores.shape)
    # top-k's n-th value, not a full sort (1,000 resamples of GPT-2's 70k pairs: 0.2 s instead of 3 s); the edges
    # tied at it join in index order until there are n
    nth = torch.topk(flat, n, dim=-1, sorted=False).values.min(-1, keepdim=True).values
    above, tied = flat > nth, flat == nth
    room = n - above.sum(-1, keepdim=True)
    if not torch.equal(tied.sum(-1, keepdim=True), room):  # more ties than room (rare): the first ones join
        tied &= tied.cumsum(-1) <= room
    return ((above | tied) & (flat > 0)).view(scores.shape)


def pruned_masks(
    graph: Graph, in_graph: Bool[Tensor, "*batch n_writers n_readers"]
) -> Bool[Tensor, "*batch n_writers n_readers"]:
    """Edges on a path from input to logits only: repeatedly drop nodes without an incoming edge (input excepted)
    or without an outgoing one, and the edges of dropped nodes (MIB's `prune`), every membership matrix at once."""
    reader_writer = graph.reader_writer()
    head_or_mlp = (reader_writer >= 0).nonzero()[:, 0]
    # which writer each head / MLP reader feeds: a reader with an edge in gives its node an incoming edge
    own_node = torch.zeros(len(head_or_mlp), graph.n_writers, device=in_graph.device)
    own_node[torch.arange(len(head_or_mlp)), reader_writer[head_or_mlp]] = 1.0
    while True:
        has_out = in_graph.any(-1)
        has_in = (in_graph.any(-2)[..., head_or_mlp].float() @ own_node) > 0
        has_in[..., 0] = True
        alive = has_out & has_in
        reader_alive = torch.ones(in_graph.shape[:-2] + (graph.n_readers,), dtype=torch.bool, device=in_graph.device)
        reader_alive[..., head_or_mlp] = alive[..., reader_writer[head_or_mlp]]
        kept = in_graph & alive[..., :, None] & reader_alive[..., None, :]
        if torch.equal(kept, in_graph):
            return kept
        in_graph = kept


def transformer_lens_edge_name(writer, reader) -> str:
    """The EAP-IG / MIB name of an edge of TransformerLens 4.3's attribution graph
    (`transformer_lens.tools.analysis.attribution_patching.Node` pairs, which also carry a position)."""

    def name(node) -> str:
        if node.kind == "embed":
            return "input"
        if node.kind == "attn_head_out":
            return f"a{node.layer}.h{node.head}"
        if node.kind in ("q_input", "k_input", "v_input"):
            return f"a{node.layer}.h{node.head}<{node.kind[0]}>"
        return f"m{node.layer}" if node.kind in ("mlp_in", "mlp_out") else "logits"

    return f"{name(writer)}->{name(reader)}"


def load_circuit(path: str | Path) -> Circuit:
    """A circuit file in EAP-IG's / MIB's JSON format: {"cfg": {"n_layers", "n_heads", "parallel_attn_mlp",
    "d_model"}, "nodes": {name: {"in_graph"}}, "edges": {"a0.h1->a2.h3<q>": {"score", "in_graph"}}}. Edges the file
    leaves out score 0 and are not in the circuit; a score of null reads as 0."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise InterpError(f"no circuit file at {path}") from error
    except json.JSONDecodeError as error:
        raise InterpError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(data, dict) or not isinstance(data.get("cfg"), dict) or not isinstance(data.get("edges"), dict):
        raise InterpError(f"{path} is not a circuit file: it needs 'cfg' and 'edges' (EAP-IG / MIB format)")
    cfg = data["cfg"]
    if cfg.get("parallel_attn_mlp"):
        raise InterpError(f"{path} is a circuit of a parallel-attention model; interp's graphs are GPT-2's")
    try:
        graph = Graph(int(cfg["n_layers"]), int(cfg["n_heads"]), int(cfg.get("d_model", 0)))
    except (KeyError, TypeError, ValueError) as error:
        raise InterpError(f"{path}: cfg needs integer n_layers and n_heads") from error
    scores = torch.zeros(graph.n_writers, graph.n_readers)
    in_graph = torch.zeros_like(graph.real)
    for name, edge in data["edges"].items():
        index = graph.edge_index(name)
        scores[index] = float(edge.get("score") or 0.0)
        in_graph[index] = bool(edge.get("in_graph", False))
    return Circuit(graph, scores, in_graph)
