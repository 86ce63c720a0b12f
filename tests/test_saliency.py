"""Why this class: Grad-CAM heat maps, `Model.explain`, the explanation
pictures and `--mode=predict --explain`."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import roadflax
from roadflax.models import roadnet, saliency
from roadflax.results import visuals
from roadflax.serve import explanations, predict
from tests import helpers

SIZE = roadnet.MIN_IMAGE_SIZE


@pytest.fixture(scope="module")
def network():
  """A randomly initialised network and two images: (model, params, images)."""
  model = roadnet.RoadNet(num_classes=3)
  params = roadnet.init_params(model, jax.random.key(0), SIZE)
  images = jax.random.normal(jax.random.key(1), (2, SIZE, SIZE, 3))
  return model, params, images


def test_grad_cam_is_one_jitted_call_of_maps_in_0_to_1(network):
  model, params, images = network
  logits, heatmaps = jax.jit(functools.partial(saliency.grad_cam, model))(
      params, images
  )
  expected = model.apply(
      {"params": params}, images, method=roadnet.RoadNet.classify
  )
  np.testing.assert_allclose(logits, expected, atol=1e-5)
  assert heatmaps.shape == (2, SIZE, SIZE) and heatmaps.dtype == jnp.float32
  assert float(heatmaps.min()) >= 0
  np.testing.assert_allclose(heatmaps.max(axis=(1, 2)), 1.0, atol=1e-6)


def test_grad_cam_is_the_predicted_logits_gradient_weighted_map(network):
  model, params, images = network
  variables = {"params": params}
  features = model.apply(variables, images, method=roadnet.RoadNet.encode)

  def logit(latent, cls):  # one image's logit of class `cls`
    return model.apply(
        variables,
        latent[None],
        (SIZE, SIZE),
        method=roadnet.RoadNet.classify_latent,
    )[0, cls]

  logits, heatmaps = saliency.grad_cam(model, params, images)
  for n, latent in enumerate(features):
    cls = int(jnp.argmax(logits[n]))
    gradient = jax.grad(logit)(latent, cls)
    # The gradient, checked in forward mode along a random direction.
    direction = jax.random.normal(jax.random.key(n), latent.shape)
    _, along = jax.jvp(
        functools.partial(logit, cls=cls), (latent,), (direction,)
    )
    assert float(jnp.vdot(gradient, direction)) == pytest.approx(
        float(along), rel=1e-4
    )
    weights = gradient.mean(axis=(0, 1))
    cam = jax.nn.relu(jnp.einsum("hwk,k->hw", latent, weights))
    cam = jax.image.resize(cam, (SIZE, SIZE), "bilinear")
    np.testing.assert_allclose(heatmaps[n], cam / cam.max(), atol=1e-5)


def _local(params):
  """`params` with conv2 to conv6 cut to their kernels' centre taps: each
  cell of the 3x3 feature map at 67 px then sees only its own patch of the
  image, columns (and rows) 0-34, 16-50 and 32-66."""
  encoder = dict(params["encoder"])
  for name in ("conv2", "conv3", "conv4", "conv5", "conv6"):
    kernel = encoder[name]["kernel"]
    centre = (kernel.shape[0] // 2, kernel.shape[1] // 2)
    encoder[name] = {
        **encoder[name],
        "kernel": jnp.zeros_like(kernel).at[centre].set(kernel[centre]),
    }
  return {**params, "encoder": encoder}


def _part(side: str, size: int) -> slice:
  """The first `size` rows or columns for "top" and "left", else the last."""
  return slice(0, size) if side in ("top", "left") else slice(SIZE - size, SIZE)


@pytest.mark.parametrize(
    "rows, columns", [("top", "right"), ("bottom", "left")]
)
def test_the_heat_map_lies_where_the_evidence_is(network, rows, columns):
  # Zero biases and an image of zeros but for one 16 px corner: only the
  # feature map's cell over that corner is not zero, so all the evidence
  # for the predicted class lies there. (Corners off the diagonal: a map
  # transposed or flipped would be elsewhere.)
  model, params, images = network
  corner = (slice(None), _part(rows, 16), _part(columns, 16))
  image = jnp.zeros((1, SIZE, SIZE, 3)).at[corner].set(images[:1][corner])

  _, (heatmap,) = saliency.grad_cam(model, _local(params), image)

  assert float(heatmap.max()) == 1.0
  quadrant = heatmap[_part(rows, SIZE // 2), _part(columns, SIZE // 2)]
  assert float(quadrant.sum()) > 0.9 * float(heatmap.sum())
  opposite = {
      "top": "bottom",
      "bottom": "top",
      "left": "right",
      "right": "left",
  }
  far = heatmap[
      _part(opposite[rows], SIZE // 2), _part(opposite[columns], SIZE // 2)
  ]
  assert float(far.max()) == 0.0


def test_explain_gives_what_the_model_saw_and_predicts(
    trained_workdir, data_root, tmp_path
):
  model = roadflax.load(trained_workdir)
  files = [f"{data_root}/test/{name}/002.jpg" for name in helpers.CLASSES]
  bad = tmp_path / "notes.jpg"
  bad.write_text("not a picture")

  explained = model.explain(files + [str(bad)], batch_size=2)
  predicted = model.predict(files)

  np.testing.assert_allclose(
      explained.probabilities[:3], predicted.probabilities, atol=1e-5
  )
  assert explained.classes[:3] == predicted.classes
  assert explained.unsure[:3] == predicted.unsure
  assert explained.pixels.shape == (4, SIZE, SIZE, 3)
  for pixels, path in zip(explained.pixels, files):
    np.testing.assert_array_equal(pixels, model.pixels(path))
  assert explained.heatmaps.shape == (4, SIZE, SIZE)
  assert np.all((explained.heatmaps[:3] >= 0) & (explained.heatmaps[:3] <= 1))
  assert explained.classes[3] is None and "notes.jpg" in explained.errors[3]
  assert np.isnan(explained.heatmaps[3]).all() and not explained.pixels[3].any()


def test_the_explanation_image_shows_the_frame_and_its_heat():
  pixels = np.full((SIZE, SIZE, 3), 128, np.uint8)
  heatmap = np.zeros((SIZE, SIZE), np.float32)
  heatmap[:, :10] = 1.0

  image = visuals.explanation_image(pixels, heatmap)

  assert image.shape == (SIZE, 2 * SIZE + 4, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[:, :SIZE], pixels)
  overlay = image[:, SIZE + 4 :].astype(int)
  hot, cold = overlay[0, 0], overlay[0, -1]
  assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red hot, blue cold


def test_explanations_are_named_after_their_inputs():
  paths = ["photos/a/1.jpg", "photos/b/1.jpg", "photos/b/1.png", "photos/c.jpg"]
  assert explanations.file_names(paths) == [
      os.path.join("a", "1.png"),
      os.path.join("b", "1_jpg.png"),
      os.path.join("b", "1_png.png"),
      "c.png",
  ]
  assert explanations.file_names(["x/road.jpg"]) == ["road.png"]


def test_predict_explain_writes_one_picture_per_image(
    trained_workdir, data_root, tmp_path, monkeypatch, capsys
):
  output = tmp_path / "out" / "predictions.json"
  predict.predict_main(
      trained_workdir,
      [f"{data_root}/test"],
      str(output),
      unsure_below=1.0,
      explain=True,
  )
  written = sorted(
      os.path.relpath(os.path.join(folder, name), tmp_path / "out")
      for folder, _, names in os.walk(tmp_path / "out" / "explanations")
      for name in names
  )
  assert written == sorted(
      os.path.join("explanations", name, f"{i:03d}.png")
      for name in helpers.CLASSES
      for i in range(4)
  )
  with Image.open(tmp_path / "out" / written[0]) as png:
    assert png.size == (2 * SIZE + 4, SIZE)
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 12 and all(line.endswith("  unsure") for line in lines)
  records = json.loads(output.read_text())["predictions"]
  assert [r["unsure"] for r in records] == [True] * 12

  monkeypatch.chdir(tmp_path)  # without --output: ./explanations
  image = f"{data_root}/test/gravel/001.jpg"
  predict.predict_main(trained_workdir, [image], None, explain=True)
  assert os.listdir(tmp_path / "explanations") == ["001.png"]
