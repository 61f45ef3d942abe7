"""genai/parallel/in_flight.py and sharding.split_local_batch on one device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.parallel import in_flight
from genai.parallel import sharding


def test_fetch_windowed_returns_every_result_in_order_on_the_host():
  calls = []
  def fn(i):
    calls.append(i)
    return {'x': jnp.asarray(i) * 2}
  for window in (1, 3, 16):
    calls.clear()
    out = in_flight.fetch_windowed(fn, range(10), window=window)
    assert [o['x'] for o in out] == [2 * i for i in range(10)]
    assert all(isinstance(o['x'], np.ndarray) for o in out) and calls == list(range(10))
  assert in_flight.fetch_windowed(fn, []) == []
  with pytest.raises(ValueError, match='window must be >= 1'):
    in_flight.fetch_windowed(fn, range(3), window=0)


def test_a_batch_stays_as_it_is_on_one_device():
  batch = {'inputs': np.zeros((4, 3), np.int32), 'mask': None}
  assert sharding.split_local_batch(batch) is batch
  assert jax.device_count() > 1 or sharding.local_split(4) is None
