"""The fast transpose gives exactly numpy's transpose, whatever the dtype and shape."""

import ml_dtypes
import numpy as np
import pytest

from fineline.convert.transpose import transpose


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, np.float32, np.float64,
                                   np.uint8])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 12), (300, 200), (130, 1030),
                                   (0, 4)])
def test_matches_numpy(dtype, shape):
  bits = np.random.default_rng(0).integers(0, 255, size=shape + (np.dtype(dtype).itemsize,),
                                           dtype=np.uint8)
  w = bits.view(dtype).reshape(shape)  # every bit pattern, NaNs included
  got = transpose(w)
  assert got.dtype == w.dtype and got.shape == shape[::-1] and got.flags.c_contiguous
  np.testing.assert_array_equal(got.view(np.uint8), np.ascontiguousarray(w.T).view(np.uint8))


def test_strided_input():
  w = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)[::2, 4:]
  np.testing.assert_array_equal(transpose(w), w.T)
