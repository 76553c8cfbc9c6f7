"""Node graphs (seed 002's style): numbered nodes and a list of edges, compiled into layers.

A spec may describe its network node by node instead of layer by layer::

    graph:
      inputs: [1]                       # the input nodes, in the order of X's columns
      nodes: {2: relu, 3: relu, 4: relu, 5: relu, 6: sigmoid}   # every other node's activation
      outputs: [6]                      # the output nodes, in the order of Y's columns
      edges: [[1, 2], [1, 3], [2, 4], [2, 5], [3, 4], [3, 5], [4, 6], [5, 6]]
      bias: false                       # default for every node (a node may say its own)

Each node j computes ``Y_j = F_j(X_j)`` with ``X_j = sum_i W_ij Y_i (+ b_j)`` over its parents
i (the nodes with an edge to j). The trainer stays vectorised: the nodes are compiled into
dense layers that read earlier layers (skip connections, ``concat``), with no parameter for an
absent edge. The nodes of one layer share their activation, their bias flag and their parents,
and every parent set is a union of whole layers: nodes are grouped by (activation, bias,
parents), and a group that some node reads only in part is split, until none is (at worst one
node per layer, still vectorised over the batch). The output nodes form the output layer.

What a dense layer cannot hold is refused with a one-line error naming the key: output nodes
with different parents or activations (the output layer is one dense layer), a node that reads
some input nodes but not all (the input is read whole), cycles, edges to unknown nodes or into
an input, a node without an incoming edge, a node other than an output without an outgoing one.

This module knows only plain data (node numbers and names); the pydantic model is in
:mod:`.model`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError

#: the most nodes a graph may have (inputs included)
MAX_GRAPH_NODES = 4096
#: the most edges
MAX_GRAPH_EDGES = 100_000
#: the most layers the nodes may group into (the spec's limit on layers)
MAX_GRAPH_LAYERS = 64


@dataclass(frozen=True)
class NodeFacts:
    """What a non-input node carries: its activation, the activation's parameter, its bias."""

    activation: str
    alpha: float | None
    bias: bool


@dataclass(frozen=True)
class Compiled:
    """A node graph as layers: ``groups[0]`` the input nodes, ``groups[l]`` the nodes of layer
    l (output layer last), ``sources[l - 1]`` the groups layer l reads (0 the input), in
    order; ``layers`` the layer mappings of an equivalent ``layers:`` spec."""

    groups: tuple[tuple[int, ...], ...]
    sources: tuple[tuple[int, ...], ...]
    layers: tuple[dict[str, Any], ...]


def _cycle(children: dict[int, list[int]], left: set[int]) -> list[int]:
    """One directed cycle among the nodes ``left`` (each of which lies on or leads to one)."""
    start = min(left)
    path, seen = [start], {start: 0}
    while True:
        node = path[-1]
        nxt = min(k for k in children[node] if k in left)
        if nxt in seen:
            return path[seen[nxt] :] + [nxt]
        seen[nxt] = len(path)
        path.append(nxt)


def compile_graph(
    inputs: list[int],
    nodes: dict[int, NodeFacts],
    outputs: list[int],
    edges: list[tuple[int, int]],
) -> Compiled:
    """Check the graph and group its nodes into layers (see the module docstring).

    Raises:
        SpecError: naming ``graph.inputs``, ``graph.nodes.J``, ``graph.outputs`` or
            ``graph.edges[k]``.
    """
    if not inputs:
        raise SpecError("graph.inputs", "expected at least one input node")
    if not outputs:
        raise SpecError("graph.outputs", "expected at least one output node")
    seen: set[int] = set()
    for k, j in enumerate(inputs):
        if j in seen:
            raise SpecError(f"graph.inputs[{k}]", f"node {j} is listed twice")
        seen.add(j)
        if j in nodes:
            raise SpecError(
                f"graph.nodes.{j}",
                f"node {j} is an input node (graph.inputs): it has no activation",
            )
    if len(inputs) + len(nodes) > MAX_GRAPH_NODES:
        raise SpecError("graph", f"at most {MAX_GRAPH_NODES} nodes, got {len(inputs) + len(nodes)}")
    if len(edges) > MAX_GRAPH_EDGES:
        raise SpecError("graph.edges", f"at most {MAX_GRAPH_EDGES} edges, got {len(edges)}")
    out_seen: set[int] = set()
    for k, j in enumerate(outputs):
        if j in out_seen:
            raise SpecError(f"graph.outputs[{k}]", f"node {j} is listed twice")
        out_seen.add(j)
        if j not in nodes:
            where = "an input node" if j in seen else "not in graph.nodes"
            raise SpecError(f"graph.outputs[{k}]", f"node {j} is {where}")
    known = seen | set(nodes)
    parents: dict[int, list[int]] = {j: [] for j in known}
    children: dict[int, list[int]] = {j: [] for j in known}
    pairs: set[tuple[int, int]] = set()
    for k, (i, j) in enumerate(edges):
        path = f"graph.edges[{k}]"
        for end in (i, j):
            if end not in known:
                raise SpecError(path, f"node {end} is neither in graph.inputs nor in graph.nodes")
        if i == j:
            raise SpecError(path, f"an edge from node {i} to itself")
        if (i, j) in pairs:
            raise SpecError(path, f"edge [{i}, {j}] is listed twice")
        if j in seen:
            raise SpecError(path, f"node {j} is an input node: no edge may end there")
        if i in out_seen:
            raise SpecError(path, f"node {i} is an output node: no edge may leave it")
        pairs.add((i, j))
        parents[j].append(i)
        children[i].append(j)
    for j in sorted(nodes):
        if not parents[j]:
            raise SpecError(
                f"graph.nodes.{j}", f"node {j} has no incoming edge: every node reads another"
            )
        if not children[j] and j not in out_seen:
            raise SpecError(
                f"graph.nodes.{j}",
                f"dangling: no edge leaves node {j} and it is not in graph.outputs",
            )
    for j in inputs:
        if not children[j]:
            raise SpecError("graph.inputs", f"dangling: no edge leaves input node {j}")
    # cycles (Kahn): what cannot be ordered lies on or behind a cycle
    indegree = {j: len(parents[j]) for j in known}
    ready = [j for j in known if not indegree[j]]
    ordered = 0
    while ready:
        node = ready.pop()
        ordered += 1
        for k in children[node]:
            indegree[k] -= 1
            if not indegree[k]:
                ready.append(k)
    if ordered < len(known):
        left = {j for j in known if indegree[j]}
        cycle = " -> ".join(str(j) for j in _cycle(children, left))
        raise SpecError("graph.edges", f"cycle {cycle}: a network is a directed acyclic graph")
    input_set = frozenset(inputs)
    for j in sorted(nodes):
        read = input_set.intersection(parents[j])
        if read and read != input_set:
            missing = sorted(input_set - read)
            raise SpecError(
                f"graph.nodes.{j}",
                f"node {j} reads input node{'s' if len(read) > 1 else ''} {sorted(read)} but not "
                f"{missing}: a node reads every input node or none (the input is read whole)",
            )
    first = outputs[0]
    for j in outputs[1:]:
        if nodes[j] != nodes[first]:
            raise SpecError(
                f"graph.nodes.{j}",
                f"the output nodes form one layer and share its activation and bias: node "
                f"{first} has {_describe(nodes[first])}, node {j} has {_describe(nodes[j])}",
            )
        if set(parents[j]) != set(parents[first]):
            raise SpecError(
                "graph.outputs",
                f"output nodes {first} and {j} read different nodes ({sorted(parents[first])} "
                f"and {sorted(parents[j])}): the output layer is dense, every output node reads "
                "the same nodes",
            )
    # group the hidden nodes, then split every group some node reads only in part
    hidden = [j for j in sorted(nodes) if j not in out_seen]
    keyed: dict[tuple, list[int]] = {}
    for j in hidden:
        keyed.setdefault((nodes[j], frozenset(parents[j])), []).append(j)
    groups = [tuple(g) for g in keyed.values()]
    reads = {frozenset(parents[j]) for j in nodes}

    def too_many() -> None:
        # checked as the groups grow (a split only adds groups): the loop stays short
        if len(groups) + 1 > MAX_GRAPH_LAYERS:
            raise SpecError(
                "graph",
                f"the nodes group into more than {MAX_GRAPH_LAYERS} layers (nodes with the same "
                "activation, bias and parents share one, and a group some node reads in part is "
                f"split); at most {MAX_GRAPH_LAYERS}",
            )

    too_many()
    changed = True
    while changed:
        changed = False
        for p in reads:
            split = []
            for g in groups:
                inside = tuple(j for j in g if j in p)
                if inside and len(inside) < len(g):
                    split += [inside, tuple(j for j in g if j not in p)]
                    changed = True
                else:
                    split.append(g)
            groups = split
            too_many()
    # order the groups: each after the groups it reads, smallest node first; outputs last
    where = {j: n for n, g in enumerate(groups) for j in g}
    needs = [{where[i] for i in parents[g[0]] if i in where} for g in groups]
    dependents: list[list[int]] = [[] for _ in groups]
    for n, req in enumerate(needs):
        for r in req:
            dependents[r].append(n)
    count = [len(req) for req in needs]
    heap = [(min(g), n) for n, g in enumerate(groups) if not count[n]]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, n = heapq.heappop(heap)
        order.append(n)
        for m in dependents[n]:
            count[m] -= 1
            if not count[m]:
                heapq.heappush(heap, (min(groups[m]), m))
    final = [tuple(inputs)] + [groups[n] for n in order] + [tuple(outputs)]
    index = {j: l for l, g in enumerate(final) for j in g}
    sources, layers = [], []
    for l, g in enumerate(final[1:], 1):
        src = tuple(sorted({index[i] for i in parents[g[0]]}))
        sources.append(src)
        facts = nodes[g[0]]
        layer: dict[str, Any] = {"units": len(g), "activation": facts.activation}
        if facts.alpha is not None:
            layer["alpha"] = facts.alpha
        if not facts.bias:
            layer["bias"] = False
        if src != (l - 1,):
            layer["from"] = list(src)
        layers.append(layer)
    return Compiled(tuple(final), tuple(sources), tuple(layers))


def _describe(facts: NodeFacts) -> str:
    alpha = f" (alpha {facts.alpha:g})" if facts.alpha is not None else ""
    return f"{facts.activation}{alpha}, {'a' if facts.bias else 'no'} bias"
