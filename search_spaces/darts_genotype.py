"""The derived architecture of a PC-DARTS search: a genotype with bits, and its derivation.

A :class:`Genotype` holds, per cell type (normal, reduce), two genes per node — ``(op,
from_node, w_bits, a_bits)``, ``from_node`` 0 and 1 being the cell's inputs and 2 + k node k —
and the nodes the cell concatenates. Bits are ``None`` for an op without quantized convs at
its position (pools, an identity skip); a skip from a reduction cell's input is a factorized
reduce and has bits.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from search_spaces.darts import (
  DARTS_OPS,
  DIL_KERNELS,
  SEP_KERNELS,
  DartsSpaceError,
  edge_offset,
  edge_softmax,
)

Gene = tuple[str, int, int | None, int | None]
GENE_OPS = tuple(op for op in DARTS_OPS if op != "none")


def op_has_convs(op: str, from_node: int, reduction: bool) -> bool:
  """Whether ``op`` on an edge from ``from_node`` holds quantized convs (and so bits)."""
  if op in SEP_KERNELS or op in DIL_KERNELS:
    return True
  return op == "skip_connect" and reduction and from_node < 2


@dataclass(frozen=True)
class Genotype:
  """A derived PC-DARTS cell pair with per-edge bit-widths.

  Attributes:
    normal, reduce: ``2·nodes`` genes ``(op, from_node, w_bits, a_bits)``, node by node.
    normal_concat, reduce_concat: state indices concatenated into the cell output.
  """

  normal: tuple[Gene, ...]
  normal_concat: tuple[int, ...]
  reduce: tuple[Gene, ...]
  reduce_concat: tuple[int, ...]

  @property
  def nodes(self) -> int:
    return len(self.normal) // 2

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict: ``{"normal": [{"op", "from", "w_bits", "a_bits"}, ...], ...}``."""

    def genes(gs):
      return [{"op": o, "from": f, "w_bits": w, "a_bits": a} for o, f, w, a in gs]

    return {
      "normal": genes(self.normal),
      "normal_concat": list(self.normal_concat),
      "reduce": genes(self.reduce),
      "reduce_concat": list(self.reduce_concat),
    }

  @classmethod
  def from_dict(cls, data: Any, source: str = "genotype") -> "Genotype":
    """Parses and checks :meth:`to_dict`'s form.

    Raises:
      DartsSpaceError: a missing or malformed field; the message names ``source`` and the field.
    """
    if not isinstance(data, dict):
      raise DartsSpaceError(f"{source}: expected a mapping, got {type(data).__name__}")
    missing = [k for k in ("normal", "normal_concat", "reduce", "reduce_concat") if k not in data]
    if missing:
      raise DartsSpaceError(f"{source}: missing field {missing[0]!r}")
    normal = _parse_genes(data["normal"], f"{source}.normal", reduction=False)
    reduce = _parse_genes(data["reduce"], f"{source}.reduce", reduction=True)
    if len(normal) != len(reduce):
      raise DartsSpaceError(
        f"{source}: normal has {len(normal) // 2} nodes but reduce has {len(reduce) // 2}"
      )
    nodes = len(normal) // 2
    return cls(
      normal,
      _parse_concat(data["normal_concat"], f"{source}.normal_concat", nodes),
      reduce,
      _parse_concat(data["reduce_concat"], f"{source}.reduce_concat", nodes),
    )


def _parse_genes(genes: Any, where: str, reduction: bool) -> tuple[Gene, ...]:
  if not isinstance(genes, list) or not genes or len(genes) % 2:
    raise DartsSpaceError(f"{where}: expected a non-empty list of 2 genes per node")
  out = []
  for k, gene in enumerate(genes):
    at = f"{where}[{k}]"
    if not isinstance(gene, dict) or set(gene) != {"op", "from", "w_bits", "a_bits"}:
      raise DartsSpaceError(f"{at}: expected the keys op, from, w_bits, a_bits, got {gene!r}")
    op, src, node = gene["op"], gene["from"], k // 2
    if op not in GENE_OPS:
      raise DartsSpaceError(f"{at}.op: unknown op {op!r}; known: {', '.join(GENE_OPS)}")
    if not _is_int(src) or not 0 <= src < node + 2:
      raise DartsSpaceError(
        f"{at}.from: expected an int in 0..{node + 1} for node {node}, got {src!r}"
      )
    bits = (gene["w_bits"], gene["a_bits"])
    if op_has_convs(op, src, reduction):
      for name, b in zip(("w_bits", "a_bits"), bits, strict=True):
        if not _is_int(b) or not 2 <= b <= 8:
          raise DartsSpaceError(f"{at}.{name}: expected an int in 2..8 for {op}, got {b!r}")
    elif bits != (None, None):
      raise DartsSpaceError(
        f"{at}: {op} from state {src} has no quantized convs; bits must be null"
      )
    out.append((op, src, *bits))
  return tuple(out)


def _parse_concat(concat: Any, where: str, nodes: int) -> tuple[int, ...]:
  if not isinstance(concat, list) or not concat:
    raise DartsSpaceError(f"{where}: expected a non-empty list of state indices")
  for i in concat:
    if not _is_int(i) or not 0 <= i < nodes + 2:
      raise DartsSpaceError(f"{where}: expected state indices in 0..{nodes + 1}, got {i!r}")
  return tuple(concat)


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def derive_genotype(
  net,
  op_probs,
  w_logits,
  a_logits,
  w_bits,
  a_bits,
) -> Genotype:
  """The PC-DARTS derivation, with bits tied per cell type.

  Per cell type, let W_e,o be the op probabilities of edge e (the mean over the search cells
  of that type: the rows are equal when the op logits are shared, as in DARTS) and β_e the
  edge-normalized weights. Node j keeps its two in-edges of largest β_e·max_{o≠none} W_e,o
  (ties: the lower edge), each with its op argmax_{o≠none} W_e,o (Xu et al. 2020,
  ``Network.genotype``).

  Bits: the final network has another number of cells than the search network, so one bit
  pair is derived per (cell type, edge, op) — the argmax over b of Σ_cells log softmax(β)_b,
  the sum running over the search cells of that type (the most probable bit-width under a
  product of the cells' independent distributions). Ops without quantized convs get ``None``.

  Args:
    net: the search network (:class:`search_spaces.darts.DartsNet`); its edge logits are read.
    op_probs: ``(L, O)`` op probabilities (expanded per choice point).
    w_logits, a_logits: ``(L, O, Bw)``, ``(L, O, Ba)`` bit logits.
    w_bits, a_bits: the candidate bit-widths.

  Raises:
    DartsSpaceError: the search network has no cell of one type (e.g. ``cells=1``).
  """
  op_probs, w_logits, a_logits = (np.asarray(a, np.float64) for a in (op_probs, w_logits, a_logits))
  edge_w = np.asarray(edge_softmax(net.edge_logits[...], net.nodes))  # (2, E)
  genes = {}
  for reduction in (False, True):
    cells = [i for i, cell in enumerate(net.cells) if cell.reduction == reduction]
    if not cells:
      kind = "reduction" if reduction else "normal"
      raise DartsSpaceError(f"the search network has no {kind} cell: use space.cells >= 3")
    rows = np.asarray([[i * net.edges + e for e in range(net.edges)] for i in cells])  # (C, E)
    w_score = _log_softmax(w_logits[rows]).sum(0)  # (E, O, Bw)
    a_score = _log_softmax(a_logits[rows]).sum(0)
    genes[reduction] = _derive_cell(
      op_probs[rows].mean(0), edge_w[int(reduction)], w_score, a_score, net, reduction,
      tuple(w_bits), tuple(a_bits),
    )  # fmt: skip
  concat = tuple(range(2, 2 + net.nodes))
  return Genotype(genes[False], concat, genes[True], concat)


def _derive_cell(probs, beta, w_score, a_score, net, reduction, w_bits, a_bits):
  op_names = net.op_names
  keep = [o for o, op in enumerate(op_names) if op != "none"]
  genes = []
  for j in range(net.nodes):
    edges = range(edge_offset(j), edge_offset(j + 1))
    strength = {e: beta[e] * probs[e, keep].max() for e in edges}
    for e in sorted(edges, key=lambda e: -strength[e])[:2]:
      o = keep[int(np.argmax(probs[e, keep]))]
      src = e - edge_offset(j)
      if op_has_convs(op_names[o], src, reduction):
        bits = (w_bits[int(np.argmax(w_score[e, o]))], a_bits[int(np.argmax(a_score[e, o]))])
      else:
        bits = (None, None)
      genes.append((op_names[o], src, *bits))
  return tuple(genes)


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
