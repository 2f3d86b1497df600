"""Packing of log-likelihood requests: every request is placed once, rows hold what they
are given, and each target position sees exactly its own context and continuation prefix,
at the positions it would have alone."""

from __future__ import annotations

import random

import numpy as np

from fineline.evaluation import packing


def random_pairs(seed, n_groups=30):
  rng = random.Random(seed)
  pairs = []
  for _ in range(n_groups):
    context = [rng.randrange(3, 99) for _ in range(rng.choice([1, 2, 7, 40, 150]))]
    for _ in range(rng.choice([1, 3, 4, 9])):
      pairs.append((context, [rng.randrange(3, 99) for _ in range(rng.randint(1, 30))]))
  return pairs


def group(pairs):
  groups = {}
  for i, (context, _) in enumerate(pairs):
    groups.setdefault(tuple(context), []).append(i)
  return groups


def test_pieces_split_groups_only_where_needed():
  pairs = [([5, 6], [7]), ([5, 6], [8, 9]), ([5, 6], [9]),     # 3 requests, 2-token context
           ([1] * 10, [2] * 50), ([1] * 10, [2] * 50), ([1] * 10, [3] * 50)]
  pieces = packing.pieces(group(pairs), pairs, max_tokens=120)
  assert sorted(i for p in pieces for i in p.requests) == list(range(6))
  short = [p for p in pieces if p.context == (5, 6)]
  assert [p.requests for p in short] == [(0, 1), (2,)]  # never more requests than context tokens
  assert [p.length for p in short] == [2 + 0 + 1, 2 + 0]
  long = [p for p in pieces if len(p.context) == 10]
  assert [p.requests for p in long] == [(3, 4), (5,)]  # 10 + 49 + 49 fits 120, a third does not
  assert all(p.length <= 120 for p in long)
  # A single request longer than the limit still gets a piece of its own.
  (alone,) = packing.pieces({(1,) * 10: [0]}, [([1] * 10, [2] * 300)], max_tokens=120)
  assert alone.length == 309


def test_batches_fill_rows_best_fit_and_place_every_piece_once():
  pairs = random_pairs(0)
  pieces = packing.pieces(group(pairs), pairs, max_tokens=1024)
  placed = []
  for row_len, rows in packing.batches(pieces, 256, lambda row_len: max(1, 2048 // row_len)):
    assert row_len >= 256 and row_len == packing.bucket(row_len, 16)
    assert 1 <= len(rows) <= max(1, 2048 // row_len)
    for row in rows:
      assert sum(p.length for p in row) <= row_len
      placed += row
  assert sorted(placed) == sorted(pieces)
  total = sum(p.length for p in pieces)
  assert total > 256 * 8  # several calls' worth


def test_each_target_sees_exactly_its_own_request():
  pairs = random_pairs(1)
  pieces = packing.pieces(group(pairs), pairs, max_tokens=1024)
  seen = set()
  for row_len, rows in packing.batches(pieces, 256, lambda row_len: 4):
    num_rows = 4
    arrays, num_targets, entries = packing.layout(rows, pairs, num_rows, row_len, 4 * row_len + 7)
    tokens_BxL, positions_BxL, segments_BxL, branches_BxL, gather_N, targets_N = arrays
    assert gather_N.shape == targets_N.shape == (4 * row_len + 7,)
    assert num_targets == sum(n for _, _, n in entries) <= num_rows * row_len
    mask_BxLxL = packing.attention_mask(positions_BxL, segments_BxL, branches_BxL)
    for request, start, n in entries:
      context, continuation = pairs[request]
      sequence = list(context) + list(continuation)
      for k in range(n):
        b, position = divmod(int(gather_N[start + k]), row_len)
        visible = np.flatnonzero(mask_BxLxL[b, position])
        order = visible[np.argsort(positions_BxL[b, visible])]
        # What the model sees from this position is the request's own prefix, in order,
        # at the positions it has alone; it predicts the next continuation token.
        assert positions_BxL[b, order].tolist() == list(range(len(context) + k))
        assert tokens_BxL[b, order].tolist() == sequence[:len(context) + k]
        assert order[-1] == position
        assert targets_N[start + k] == continuation[k]
      seen.add(request)
  assert seen == set(range(len(pairs)))


def test_bucket_pads_to_few_sizes():
  sizes = {packing.bucket(n, 16) for n in range(1, 5000)}
  assert len(sizes) <= 20
  for n in range(1, 5000):
    b = packing.bucket(n, 16)
    assert b >= max(n, 16) and (n <= 16 or b <= 1.5 * n)
