"""Near-duplicate images between splits: a held-out image that shows what a
train image shows (the same photograph cropped, zoomed, re-exposed or
mirrored; a neighbouring video frame) measures memory, not the surface.

A whole-image hash cannot see this for road textures (`keypoints` says why).
Each image is reduced to the local features of `keypoints` instead. Two
images are near duplicates when at least MIN_INLIERS of their points pair up
(descriptors closer than MIN_SIMILARITY) and agree on one zoom and shift
between the images (within 3% of the shorter side and 10% of zoom), spread
over an area rather than along one line: crops of one photograph share many
such points; different photographs, even of the same gravel, share a few by
chance, at unrelated zooms and shifts. Held-out features are also mirrored
left-right, top-bottom and both, to find mirrored copies.

Comparing every held-out point with every train point would grow as the
product of the splits; each point's descriptor instead gets short
locality-sensitive codes (signs of fixed random projections, in several
tables), and only points sharing a code in some table are compared. Images
are read in worker processes, one a core: about 8 ms of CPU an image (numpy
on small arrays holds Python's lock, so threads would not help); matching
1,200 images against 3,000 takes about 6 s.

Measured (240x360 JPEG frames cut from scikit-image's photographs, re-exposed
by a random gamma and gain): a frame and one other crop of its photograph at
the same zoom are matched when they share half their area or more; at 1.5x
zoom when one lies mostly inside the other (gravel 10 of 10, the astronaut
photo about half); at 2x, about half the time. A folder with 60 train frames
of one gravel photograph (64 to 128 rows each) has 7 or 8 of its 8 test
frames matched; with train, validation and test cut from separate bands of
rows, none. No match between crops of 13 different photographs, nor between
any of 1,200 test and 3,000 train frames of roadtex (at most 4 agreeing
points, 6 needed). The ground-photo set (`datasets.ground_photos`) has test
frames of grass and brick matched to train frames: the grass photograph
repeats parts of itself and the brick paving is periodic, so its bands share
content though not pixels.

Limits: images with little texture (fog, a blank wall, a silhouette) have
few points and are never matched; a crop sharing less than about a third of
its area, at more than about twice the zoom, rotated or seen in another
perspective is missed; a periodic surface (regular paving, tiles) can match
another photograph of it.
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os
from typing import Sequence

import numpy as np
from PIL import Image

from roadflax.data import keypoints

MIN_SIMILARITY = 0.85  # Cosine of two points' descriptors to pair them.
MIN_INLIERS = 6  # Paired points that agree on one zoom and shift.
SHIFT_TOLERANCE = 0.03  # Of the shorter side, once zoom and shift are fitted.
ZOOM_TOLERANCE = 0.1  # On the log of the zoom.
MIN_SPREAD = 0.05  # Of the shorter side: agreeing points not on one line.
_TABLES = 20  # Locality-sensitive hash tables,
_BITS = 22  # each with a code of this many bits.
_MAX_BUCKET = 2000  # A code shared by more train points says nothing.
_PAIRS_CHUNK = 1 << 18  # Candidate pairs compared at once.
# Below this many images, starting worker processes (about a second)
# costs more than it saves; each is sent this many paths at a time.
_MIN_POOL_IMAGES = 400
_CHUNK = 64
_MIRRORS = ((False, False), (True, False), (False, True), (True, True))


@dataclasses.dataclass(frozen=True)
class Match:
  """A held-out image's best near-duplicate among the train images."""

  query: int  # index in the held-out images
  reference: int  # index in the train images
  points: int  # points that agree on one zoom and shift
  mirrored: bool


def image_features(path: str) -> keypoints.Features | None:
  """The features of one image file; None if it cannot be read."""
  try:
    with Image.open(path) as image:
      return keypoints.features(keypoints.thumbnail(image))
  except (OSError, ValueError, Image.DecompressionBombError):
    return None


def features_of(paths: Sequence[str]) -> list[keypoints.Features | None]:
  """`image_features` of each path, in order: in worker processes, one a
  core, unless there are too few images to repay starting them."""
  if len(paths) >= _MIN_POOL_IMAGES and (os.cpu_count() or 1) > 1:
    try:
      with concurrent.futures.ProcessPoolExecutor(
          os.cpu_count(), mp_context=multiprocessing.get_context("spawn")
      ) as pool:
        return list(pool.map(image_features, paths, chunksize=_CHUNK))
    except concurrent.futures.process.BrokenProcessPool:
      pass  # A program read from stdin cannot start workers: work here.
  return [image_features(path) for path in paths]


@dataclasses.dataclass(frozen=True)
class _Points:
  """The points of many images, stacked: image i's are rows where image ==
  i, in `variant` (a mirroring, for held-out images) 0 to 3."""

  points: np.ndarray  # float32 [n, 3]
  descriptors: np.ndarray  # float32 [n, DESCRIPTOR_SIZE]
  image: np.ndarray  # int64 [n]
  variant: np.ndarray  # int64 [n]

  @classmethod
  def stack(
      cls, found: Sequence[keypoints.Features | None], mirrors=_MIRRORS[:1]
  ) -> "_Points":
    parts = [
        (keypoints.mirrored(f, *mirror), i, v)
        for i, f in enumerate(found)
        if f is not None and len(f)
        for v, mirror in enumerate(mirrors)
    ]
    if not parts:
      return cls(
          np.zeros((0, 3), np.float32),
          np.zeros((0, keypoints.DESCRIPTOR_SIZE), np.float32),
          np.zeros(0, np.int64),
          np.zeros(0, np.int64),
      )
    return cls(
        np.concatenate([f.points for f, _, _ in parts]),
        np.concatenate([f.descriptors for f, _, _ in parts]),
        np.concatenate([np.full(len(f), i) for f, i, _ in parts]),
        np.concatenate([np.full(len(f), v) for f, _, v in parts]),
    )


def find_near_duplicates(
    held_out: Sequence[keypoints.Features | None],
    train: Sequence[keypoints.Features | None],
    *,
    mirrors: bool = True,
) -> dict[int, Match]:
  """The best match among `train` of each held-out image that has one.

  Args:
    held_out: features of the held-out images (None: unreadable).
    train: features of the train images.
    mirrors: also match the held-out images mirrored (left-right, top-bottom
      and both).
  """
  queries = _Points.stack(held_out, _MIRRORS if mirrors else _MIRRORS[:1])
  references = _Points.stack(train)
  query, reference = _paired_points(queries, references)
  best: dict[int, Match] = {}
  key = (queries.image[query] * len(_MIRRORS) + queries.variant[query]) * len(
      train
  ) + references.image[reference]
  order = np.argsort(key, kind="stable")
  key, query, reference = key[order], query[order], reference[order]
  starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
  ends = np.r_[starts[1:], len(key)]
  for start, end in zip(starts, ends):
    if end - start < MIN_INLIERS:
      continue
    agreeing = _agreeing_points(
        queries.points[query[start:end]],
        references.points[reference[start:end]],
        query[start:end],
        reference[start:end],
    )
    image = int(queries.image[query[start]])
    if agreeing >= MIN_INLIERS and (
        image not in best or agreeing > best[image].points
    ):
      best[image] = Match(
          image,
          int(references.image[reference[start]]),
          agreeing,
          bool(queries.variant[query[start]]),
      )
  return best


def _paired_points(
    queries: _Points, references: _Points
) -> tuple[np.ndarray, np.ndarray]:
  """(query point, reference point) index pairs whose descriptors are at
  least MIN_SIMILARITY alike, among those that share a code in a table."""
  if not len(queries.image) or not len(references.image):
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  query_codes = _codes(queries.descriptors)
  reference_codes = _codes(references.descriptors)
  candidates = np.unique(
      np.concatenate([
          _same_code(query_codes[:, t], reference_codes[:, t])
          for t in range(_TABLES)
      ])
  )
  query, reference = np.divmod(candidates, len(references.image))
  keep = np.zeros(len(candidates), bool)
  for start in range(0, len(candidates), _PAIRS_CHUNK):
    part = slice(start, start + _PAIRS_CHUNK)
    similarity = np.einsum(
        "ij,ij->i",
        queries.descriptors[query[part]],
        references.descriptors[reference[part]],
    )
    keep[part] = similarity >= MIN_SIMILARITY
  return query[keep], reference[keep]


def _codes(descriptors: np.ndarray) -> np.ndarray:
  """Each descriptor's code in each table, int64 [n, _TABLES]: which side of
  _BITS fixed random hyperplanes it lies on, once centred."""
  planes = np.random.default_rng(0).standard_normal(
      (keypoints.DESCRIPTOR_SIZE, _TABLES * _BITS)
  )
  centred = descriptors - descriptors.mean(axis=1, keepdims=True)
  bits = (centred @ planes.astype(np.float32) > 0).reshape(-1, _TABLES, _BITS)
  return bits.astype(np.int64) @ (1 << np.arange(_BITS, dtype=np.int64))


def _same_code(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """query_index * len(reference) + reference_index of every pair with the
  same code, leaving out codes shared by more than _MAX_BUCKET references."""
  order = np.argsort(reference, kind="stable")
  ordered = reference[order]
  low = np.searchsorted(ordered, query, side="left")
  high = np.searchsorted(ordered, query, side="right")
  counts = np.where(high - low > _MAX_BUCKET, 0, high - low)
  total = int(counts.sum())
  owner = np.repeat(np.arange(len(query)), counts)
  within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
  matched = order[np.repeat(low, counts) + within]
  return owner * len(reference) + matched


def _agreeing_points(
    query: np.ndarray,
    reference: np.ndarray,
    query_ids: np.ndarray,
    reference_ids: np.ndarray,
) -> int:
  """The most paired points that one zoom and shift map onto each other,
  counting each point once: every pair proposes the zoom and shift that
  map its query point onto its reference point, and the others vote.

  Points that agree along a line (an edge, the horizon) leave the shift
  along it free, so they agree by chance: a set counts only where its query
  points spread at least MIN_SPREAD across their narrowest direction.

  Args:
    query, reference: [m, 3] (row, column, scale) of the paired points.
    query_ids, reference_ids: [m] which point each is.
  """
  log_zoom = np.log(reference[:, 2] / query[:, 2])
  zoom = np.exp(log_zoom)
  shift = reference[:, :2] - zoom[:, None] * query[:, :2]
  # [hypothesis, pair]: where hypothesis h puts pair j's query point.
  predicted = zoom[:, None, None] * query[None, :, :2] + shift[:, None, :]
  agree = (np.abs(log_zoom[None, :] - log_zoom[:, None]) < ZOOM_TOLERANCE) & (
      np.linalg.norm(predicted - reference[None, :, :2], axis=2)
      < SHIFT_TOLERANCE
  )
  best = 0
  for votes in agree[agree.sum(axis=1) >= MIN_INLIERS]:
    distinct, first = np.unique(query_ids[votes], return_index=True)
    count = min(len(distinct), len(np.unique(reference_ids[votes])))
    if count > best and _spread(query[votes][first, :2]) >= MIN_SPREAD:
      best = count
  return best


def _spread(points: np.ndarray) -> float:
  """The standard deviation of `points` [k, 2] across their narrowest
  direction: 0 for points on a line."""
  if len(points) < 3:
    return 0.0
  return float(np.sqrt(max(np.linalg.eigvalsh(np.cov(points.T))[0], 0.0)))
