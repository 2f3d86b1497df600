"""Fast host transposes of large weight matrices (any dtype, bfloat16 included).

numpy copies a transposed view element by element along strided addresses: a large matrix
misses the cache on nearly every element. Copying tile by tile keeps both sides in cache,
and moving 8-byte words instead of the 2-byte elements of a bfloat16 matrix does a quarter
of the element copies: rows are transposed as words of 4 neighbouring elements, and a
second, contiguous pass spreads each word's elements over 4 output rows.
"""

from __future__ import annotations

import numpy as np

_TILE = 128  # rows of the source per tile: a tile and its copy stay in the L2 cache
_BAND = 64  # words of a source row per band: one band's words fit in the cache together


def transpose(w_AxB: np.ndarray) -> np.ndarray:
  """A contiguous B×A copy of a 2-D array. Moves raw bits (unsigned integers of the same
  width), so bfloat16 needs no numpy arithmetic support."""
  a, b = w_AxB.shape
  size = w_AxB.dtype.itemsize
  bits_AxB = np.ascontiguousarray(w_AxB).view(f"u{size}")
  pack = 8 // size if size < 8 and b % (8 // size) == 0 else 1
  words_AxW = bits_AxB.view(np.uint64) if pack > 1 else bits_AxB  # W = B / pack
  w = b // pack
  out_BxA = np.empty((b, a), bits_AxB.dtype)
  out_WxPxA = out_BxA.reshape(w, pack, a)
  scratch_WxA = np.empty((min(_BAND, w), a), words_AxW.dtype) if pack > 1 else None
  for w0 in range(0, w, _BAND):
    w1 = min(w0 + _BAND, w)
    dst = scratch_WxA[:w1 - w0] if pack > 1 else out_BxA[w0:w1]
    for i in range(0, a, _TILE):
      dst[:, i:i + _TILE] = words_AxW[i:i + _TILE, w0:w1].T
    if pack > 1:  # word (w, i) holds elements (i, w·pack … w·pack + pack - 1)
      words_WxAxP = dst.view(bits_AxB.dtype).reshape(w1 - w0, a, pack)
      for k in range(pack):
        out_WxPxA[w0:w1, k, :] = words_WxAxP[:, :, k]
  return out_BxA.view(w_AxB.dtype)
