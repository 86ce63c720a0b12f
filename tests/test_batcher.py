"""The app's cross-session batching: concurrent calls share model passes and
each caller gets its own rows."""

import threading
import time

import numpy as np
import pytest

from roadflax.serve import batcher


def _double_and_sum(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  time.sleep(0.05)  # a model pass takes a while: others queue up meanwhile
  return images * 2, images.reshape(len(images), -1).sum(1)


def test_concurrent_callers_share_passes_and_get_their_own_rows():
  batched = batcher.Batcher(_double_and_sum, max_batch=32, max_wait_s=0.2)
  results, errors = {}, []

  def call(k: int) -> None:
    try:
      results[k] = batched(np.full((2, 3, 3, 1), k, np.float32))
    except Exception as error:  # reported below
      errors.append(error)

  threads = [threading.Thread(target=call, args=(k,)) for k in range(20)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=30)
  assert not errors
  for k in range(20):
    doubled, sums = results[k]
    assert doubled.shape == (2, 3, 3, 1) and np.all(doubled == 2 * k)
    np.testing.assert_array_equal(sums, [9 * k, 9 * k])
  assert sum(batched.batch_sizes) == 40
  assert len(batched.batch_sizes) < 20  # shared, not one pass per caller
  assert max(batched.batch_sizes) > 2


def test_images_of_other_shapes_wait_for_their_own_pass():
  batched = batcher.Batcher(lambda x: x + 1, max_wait_s=0.1)
  out = {}
  threads = [
      threading.Thread(
          target=lambda s=s: out.__setitem__(s, batched(np.zeros((1, s))))
      )
      for s in (3, 5, 3)
  ]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=30)
  assert out[3].shape == (1, 3) and out[5].shape == (1, 5)
  assert np.all(out[5] == 1)


def test_a_failing_pass_raises_in_every_caller_and_the_next_pass_works():
  calls = []

  def fragile(images: np.ndarray) -> np.ndarray:
    calls.append(len(images))
    if len(calls) == 1:
      raise ValueError("model failed")
    return images

  batched = batcher.Batcher(fragile, max_wait_s=0.0)
  with pytest.raises(ValueError, match="model failed"):
    batched(np.zeros((1, 2)))
  np.testing.assert_array_equal(batched(np.ones((3, 2))), np.ones((3, 2)))


def test_batches_fill_powers_of_two_so_no_pass_computes_padding():
  batched = batcher.Batcher(_double_and_sum, max_batch=32, max_wait_s=0.2)
  threads = [
      threading.Thread(target=batched, args=(np.zeros((1, 2, 2, 1)),))
      for _ in range(20)
  ]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=30)
  assert sum(batched.batch_sizes) == 20
  assert all(n & (n - 1) == 0 for n in batched.batch_sizes)


def test_the_app_load_benchmark_times_both_ways(trained_workdir):
  from roadflax.benchmark import app_load

  ways = app_load.measure(trained_workdir, sessions=4, photos=2, repeats=1)
  assert set(ways) == {"pass per request", "batcher"}
  for figures in ways.values():
    assert 0 < figures["p50_s"] <= figures["p95_s"] <= figures["all_served_s"]


def test_an_empty_request_fails_alone_and_the_worker_keeps_serving():
  batched = batcher.Batcher(lambda x: x + 1, max_wait_s=0.0)
  with pytest.raises(ValueError, match="at least one image"):
    batched(np.zeros((0, 2)))
  np.testing.assert_array_equal(batched(np.zeros((1, 2))), np.ones((1, 2)))
