"""Model shapes, exact parameter counts, and the size limits."""

import jax
import jax.numpy as jnp
import pytest

from roadflax.models import fast_layers, layer_table, precision, roadnet
from roadflax.errors import UserError


@pytest.fixture(scope="module")
def params_224():
  return jax.eval_shape(
      lambda key: roadnet.init_params(roadnet.RoadNet(num_classes=3), key, 224),
      jax.random.key(0),
  )


def test_parameter_counts_at_224(params_224):
  counts = {
      name: roadnet.count_params(params_224[name])
      for name in ("encoder", "decoder", "head")
  }
  assert counts == {
      "encoder": 4_337_280,
      "decoder": 4_337_027,
      "head": 43_012_099,
  }
  assert counts["encoder"] + counts["head"] == 47_349_379


def test_encoder_layer_shapes_follow_keras_semantics():
  model = roadnet.RoadNet(num_classes=3)
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(
          v, x, capture_intermediates=True, mutable=["intermediates"]
      ),
      variables,
      images,
  )
  encoder = state["intermediates"]["encoder"]
  assert encoder["conv1"]["__call__"][0].shape == (2, 54, 54, 96)
  assert encoder["conv2"]["__call__"][0].shape == (2, 26, 26, 256)
  assert encoder["conv6"]["__call__"][0].shape == (2, 12, 12, 256)
  assert encoder["__call__"][0].shape == (2, 12, 12, 256)


@pytest.mark.parametrize("size", [224, 160, 227, 256, roadnet.MIN_IMAGE_SIZE])
def test_reconstruction_has_the_input_size(size):
  model = roadnet.RoadNet(num_classes=5)
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  logits, reconstruction = jax.eval_shape(model.apply, variables, images)
  assert reconstruction.shape == (2, size, size, 3)
  assert logits.shape == (2, 5)


def test_non_square_inputs_reconstruct_exactly():
  model = roadnet.RoadNet(num_classes=3)
  images = jax.ShapeDtypeStruct((1, 240, 360, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  recon = jax.eval_shape(
      lambda v, x: model.apply(v, x, method=roadnet.RoadNet.reconstruct),
      variables,
      images,
  )
  assert recon.shape == (1, 240, 360, 3)


def test_minimum_size_is_where_pool5_is_one_pixel():
  assert roadnet.MIN_IMAGE_SIZE == 67
  assert roadnet.feature_sizes(67).pool5 == 1
  assert roadnet.feature_sizes(66).pool5 == 0


def test_sizes_below_the_minimum_are_refused_naming_it():
  with pytest.raises(UserError, match="minimum of 67x67"):
    roadnet.init_params(roadnet.RoadNet(num_classes=3), jax.random.key(0), 64)


def test_head_on_the_decoder_reads_its_96_channel_map():
  model = roadnet.RoadNet(num_classes=3, head_input="decoder")
  params = jax.eval_shape(
      lambda key: roadnet.init_params(model, key, 224), jax.random.key(0)
  )
  # pool5 of the 26x26x96 decoder map is 12x12x96.
  assert params["head"]["fc1"]["kernel"].shape == (12 * 12 * 96, 4096)


def test_forward_pass_is_deterministic_without_dropout():
  model = roadnet.RoadNet(num_classes=3)
  params = roadnet.init_params(model, jax.random.key(0), 67)
  x = jax.random.normal(jax.random.key(1), (2, 67, 67, 3))
  a = model.apply({"params": params}, x, method=roadnet.RoadNet.classify)
  b = model.apply({"params": params}, x, method=roadnet.RoadNet.classify)
  assert jnp.array_equal(a, b)
  dropped = model.apply(
      {"params": params},
      x,
      train=True,
      method=roadnet.RoadNet.classify,
      rngs={"dropout": jax.random.key(2)},
  )
  assert not jnp.array_equal(a, dropped)


def test_summary_prints_the_totals():
  text = layer_table.layer_table(roadnet.RoadNet(num_classes=3), 224)
  for expected in (
      "encoder: 4,337,280",
      "decoder: 4,337,027",
      "head: 43,012,099",
      "classifier (encoder + head): 47,349,379",
      "encoder/conv1",
      "(1, 54, 54, 96)",
  ):
    assert expected in text


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [
        ((26, 26), (112, 112)),
        ((54, 54), (224, 224)),
        ((15, 16), (67, 70)),
        ((55, 55), (227, 227)),
    ],
)
def test_fast_strided_transpose_equals_flax_conv_transpose(in_hw, out_hw):
  import flax.linen as nn

  x = jax.random.normal(jax.random.key(1), (2, *in_hw, 5))
  padding = [
      (10, 10 + out - ((n - 1) * 4 + 11)) for n, out in zip(in_hw, out_hw)
  ]
  reference = nn.ConvTranspose(3, (11, 11), strides=(4, 4), padding=padding)
  variables = reference.init(jax.random.key(0), x)
  variables = {
      "params": {**variables["params"], "bias": jnp.array([0.1, -0.2, 0.3])}
  }
  fast = fast_layers.StridedConvTranspose(3, 11, 4, out_hw)
  assert jax.tree_util.tree_structure(
      fast.init(jax.random.key(0), x)
  ) == jax.tree_util.tree_structure(variables)
  expected = reference.apply(variables, x)
  actual = fast.apply(variables, x)
  assert actual.shape == expected.shape == (2, *out_hw, 3)
  assert jnp.max(jnp.abs(actual - expected)) < 1e-5


@pytest.mark.parametrize(
    "hw,patches",
    [
        ((224, 224), None),
        ((67, 67), True),
        ((240, 360), True),
        ((227, 230), True),
        ((224, 224), False),
    ],
)
def test_patch_conv_equals_flax_conv_with_the_same_parameters(hw, patches):
  import flax.linen as nn

  x = jax.random.normal(jax.random.key(1), (2, *hw, 3))
  reference = nn.Conv(
      8,
      (11, 11),
      strides=(4, 4),
      padding="VALID",
      kernel_init=nn.initializers.glorot_uniform(),
  )
  fast = fast_layers.PatchConv(8, 11, 4, patches=patches)
  variables = reference.init(jax.random.key(0), x)
  # Same names, shapes and initial values: checkpoints are interchangeable.
  same = jax.tree_util.tree_map(
      jnp.array_equal, fast.init(jax.random.key(0), x), variables
  )
  assert all(jax.tree_util.tree_leaves(same))
  variables = {"params": {**variables["params"], "bias": jnp.arange(8.0) / 10}}
  expected, actual = reference.apply(variables, x), fast.apply(variables, x)
  assert actual.shape == expected.shape
  assert jnp.max(jnp.abs(actual - expected)) < 1e-4

  def weight_gradient(module):
    def loss(v):
      return jnp.sum(jnp.tanh(module.apply(v, x)))

    return jax.grad(loss)(variables)["params"]

  for name, want in weight_gradient(reference).items():
    got = weight_gradient(fast)[name]
    assert jnp.max(jnp.abs(got - want)) < 1e-5 * jnp.max(jnp.abs(want)), name


def test_group_norm_adds_two_parameters_per_channel():
  model = roadnet.RoadNet(num_classes=3, norm="group")
  params = jax.eval_shape(
      lambda key: roadnet.init_params(model, key, 224), jax.random.key(0)
  )
  counts = {
      name: roadnet.count_params(params[name])
      for name in ("encoder", "decoder", "head")
  }
  # encoder widths 96+256+384+384+256+256, decoder 256+384+384+256+96 (its
  # last layer draws the image and has none)
  assert counts == {
      "encoder": 4_337_280 + 2 * 1632,
      "decoder": 4_337_027 + 2 * 1376,
      "head": 43_012_099,
  }


def test_group_norm_makes_the_encoder_blind_to_input_scale():
  """Without norm (zero biases at init) the encoder is linear in the input's
  scale; with GroupNorm after every convolution its output barely changes."""
  images = jax.random.normal(jax.random.key(1), (2, 96, 96, 3))

  def latent_rms(norm, scale):
    model = roadnet.RoadNet(num_classes=3, norm=norm)
    params = roadnet.init_params(model, jax.random.key(0), 96)
    _, state = model.apply(
        {"params": params},
        scale * images,
        mutable=["intermediates"],
        method=roadnet.RoadNet.classify,
    )
    return float(state["intermediates"]["encoder"]["rms"][0])

  assert latent_rms("none", 100.0) / latent_rms("none", 1.0) == pytest.approx(
      100.0, rel=1e-3
  )
  assert latent_rms("group", 100.0) / latent_rms("group", 1.0) == pytest.approx(
      1.0, abs=0.05
  )


def test_unknown_norm_is_refused():
  with pytest.raises(UserError, match="model.norm"):
    roadnet.init_params(
        roadnet.RoadNet(num_classes=3, norm="batch"), jax.random.key(0), 67
    )


@pytest.mark.parametrize("head_input", roadnet.HEAD_INPUTS)
def test_bfloat16_model_computes_in_bfloat16_on_float32_parameters(head_input):
  float32 = roadnet.RoadNet(num_classes=3, head_input=head_input)
  model = float32.clone(dtype=jnp.bfloat16)
  images = jax.ShapeDtypeStruct((2, 67, 67, 3), jnp.float32)
  # A float32 model's parameters are what the bfloat16 one creates and reads.
  params = jax.eval_shape(float32.init, jax.random.key(0), images)["params"]
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  )
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {
      jnp.dtype(jnp.float32)
  }
  (logits, reconstruction), state = jax.eval_shape(
      lambda p, x: model.apply(
          {"params": p},
          x,
          capture_intermediates=True,
          mutable=["intermediates"],
      ),
      params,
      images,
  )
  layers = state["intermediates"]
  for path in (
      ("encoder", "conv1"),
      ("encoder", "conv6"),
      ("decoder", "deconv2"),
      ("decoder", "deconv1"),
      ("head", "fc2"),
  ):
    module = layers[path[0]][path[1]]
    assert module["__call__"][0].dtype == jnp.bfloat16, path
  assert logits.dtype == reconstruction.dtype == jnp.float32
  assert layers["encoder"]["rms"][0].dtype == jnp.float32


def test_auto_dtype_follows_the_backend_and_unknown_names_are_refused():
  assert precision.compute_dtype("auto") == (
      jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
  )
  assert precision.compute_dtype("float16") == jnp.float16
  with pytest.raises(UserError, match="model.dtype"):
    precision.compute_dtype("float64")
