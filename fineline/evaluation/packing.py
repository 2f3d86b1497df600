"""Log-likelihood requests packed into rows, so that one forward pass scores many exactly.

Requests with the same context form a group. In a row, a group lays out its context and
then, for each of its requests, the continuation's tokens but the last; each continuation
restarts its positions where the context ends and sees only the context and its own earlier
tokens, so it is computed exactly as it would be alone (lm-eval runs context+continuation
as one sequence). The context's last position predicts every continuation's first token,
each continuation token the next one. Several groups share a row, each seeing only itself
(`segments`, `branches` and the positions make the attention mask). So a shared context
is computed once, a row is padded only at its end, and the LM head runs only at the
positions whose log-probabilities are read (`gather`, `targets`).
"""

from __future__ import annotations

import bisect
import typing

import numpy as np


def bucket(n: int, minimum: int = 16) -> int:
  """The padded size for `n`: the next of minimum·{1, 1.5, 2, 3, 4, 6, 8, …} at or above
  n (at most a third wasted; every distinct shape is a compile)."""
  size = minimum
  while size < n:
    size = size * 3 // 2 if size & (size - 1) == 0 and size >= 2 else (
        size * 4 // 3 if size >= 2 else 2)
  return size


class Piece(typing.NamedTuple):
  """A context and some of the requests scored after it: `length` tokens of one row."""
  context: tuple[int, ...]
  requests: tuple[int, ...]
  length: int


def pieces(groups: dict[tuple[int, ...], list[int]], pairs, max_tokens: int) -> list[Piece]:
  """Each group whole, or split (its context repeated) where it would exceed `max_tokens`
  (or, when longer, its longest single request) or hold more requests than its context
  has tokens: a piece then never has more targets than tokens."""
  out = []
  for context, idx in groups.items():
    cap = max(max_tokens, max(len(context) + len(pairs[i][1]) - 1 for i in idx))
    current, length = [], len(context)
    for i in idx:
      extra = len(pairs[i][1]) - 1
      if current and (length + extra > cap or len(current) == len(context)):
        out.append(Piece(context, tuple(current), length))
        current, length = [], len(context)
      current.append(i)
      length += extra
    out.append(Piece(context, tuple(current), length))
  return out


def batches(all_pieces: list[Piece], min_row: int, rows_for: typing.Callable[[int], int]):
  """Yields (row length, rows: lists of pieces), longest pieces first.

  A call's row length is the bucket of its longest piece (at least `min_row`); its
  `rows_for(row length)` rows are filled best-fit: each takes the longest remaining pieces
  that still fit, so short requests fill the tails that long ones leave.
  """
  order = sorted(all_pieces, key=lambda p: (p.length, -p.requests[0]))
  lengths = [p.length for p in order]
  while order:
    row_len = max(min_row, bucket(lengths[-1], 16))
    rows = []
    for _ in range(rows_for(row_len)):
      row, free = [], row_len
      while True:
        k = bisect.bisect_right(lengths, free) - 1
        if k < 0:
          break
        row.append(order.pop(k))
        free -= lengths.pop(k)
      if not row:
        break
      rows.append(row)
    yield row_len, rows


class Entry(typing.NamedTuple):
  """Request `request`'s `n` target log-probabilities: targets start … start + n − 1."""
  request: int
  start: int
  n: int


def layout(rows: list[list[Piece]], pairs, num_rows: int, row_len: int, capacity: int):
  """Host arrays of one call, the number of targets, and the entries of the requests.

  Arrays (int32): tokens, positions, segments (1, 2, … per piece of a row; 0 = padding) and
  branches (0 = context, j = the piece's j-th continuation), each num_rows×row_len; gather
  (flat row·row_len + position indices of the hidden states that predict) and targets (the
  tokens they predict), each `capacity` ≥ num_rows·row_len long, of which the first
  `num_targets` count (pieces have no more targets than tokens).
  """
  tokens_BxL, positions_BxL, segments_BxL, branches_BxL = (
      np.zeros((num_rows, row_len), np.int32) for _ in range(4))
  gather_N, targets_N = (np.zeros((capacity,), np.int32) for _ in range(2))
  entries, e = [], 0
  for b, row in enumerate(rows):
    t = 0
    for segment, piece in enumerate(row, start=1):
      c = len(piece.context)
      tokens_BxL[b, t:t + c] = piece.context
      positions_BxL[b, t:t + c] = np.arange(c)
      segments_BxL[b, t:t + c] = segment
      last_context = b * row_len + t + c - 1
      t += c
      for branch, i in enumerate(piece.requests, start=1):
        continuation = pairs[i][1]
        n = len(continuation)
        tokens_BxL[b, t:t + n - 1] = continuation[:-1]
        positions_BxL[b, t:t + n - 1] = np.arange(c, c + n - 1)
        segments_BxL[b, t:t + n - 1] = segment
        branches_BxL[b, t:t + n - 1] = branch
        gather_N[e] = last_context
        gather_N[e + 1:e + n] = b * row_len + np.arange(t, t + n - 1)
        targets_N[e:e + n] = continuation
        entries.append(Entry(i, e, n))
        t += n - 1
        e += n
  arrays = (tokens_BxL, positions_BxL, segments_BxL, branches_BxL, gather_N, targets_N)
  return arrays, e, entries


def attention_mask(positions_BxL, segments_BxL, branches_BxL):
  """mask_BxLxL of a packed row (works on numpy or jax arrays): same piece, not after the
  query's position, and the context or the query's own continuation."""
  same_piece = segments_BxL[:, :, None] == segments_BxL[:, None, :]
  causal = positions_BxL[:, :, None] >= positions_BxL[:, None, :]
  visible = (branches_BxL[:, None, :] == 0) | (branches_BxL[:, :, None] == branches_BxL[:, None, :])
  return same_piece & causal & visible
