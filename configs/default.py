"""The published recipe at 224x224: autoencoder pre-training, then a classifier.

Train on your own image-folder tree:
  python main.py --config=configs/default.py --workdir=runs/roads \
      --config.data.root=/data/roads
"""

import ml_collections


def stage(**overrides) -> ml_collections.ConfigDict:
  """One training stage with every field present, so any can be overridden."""
  fields = dict(
      objective="classification",  # reconstruction | classification | joint
      optimizer="sgd",  # sgd | momentum | adam | adamw
      learning_rate=0.1,
      momentum=0.9,  # used by `momentum` only
      schedule="constant",  # constant | cosine | step
      warmup_epochs=0.0,
      decay_epochs=(),  # `step` schedule: epochs at which the rate is multiplied
      decay_factor=0.1,  # ... by this factor
      weight_decay=0.0,  # decoupled for adamw, added to the gradient otherwise
      grad_clip_norm=0.0,  # 0 = no clipping
      epochs=10,
      steps=0,  # > 0 overrides `epochs` with an exact number of steps
      batch_size=32,  # global batch, split over all devices
      freeze_encoder=False,
      init_from="",  # "" | name of an earlier stage | path to a workdir stage
      label_smoothing=0.0,
      reconstruction_weight=1.0,  # `joint` only: CE + weight * MSE
  )
  unknown = set(overrides) - set(fields)
  if unknown:
    raise KeyError(f"unknown stage fields {sorted(unknown)}")
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.source = "folder"  # synthetic | folder | rscd | tfds
  config.data.root = ""  # folder: ROOT/{train,val,test}/CLASS/*.jpg|png
  # Where roadtex is generated, and the disk cache and TFDS class counts are
  # kept ("" = ~/.cache/roadflax).
  config.data.cache_dir = ""
  # rscd: the downloaded release (its zip, or train/, vali_20k/, test_50k/),
  # read once to build the TFDS data set `rscd/<variant>` in data_dir.
  config.data.manual_dir = ""
  config.data.variant = "3class"  # 3class | 27class | 3class_by_day | 27class_by_day
  config.data.data_dir = ""  # rscd and tfds: TFDS data_dir ("" = ~/tensorflow_datasets)
  # tfds: any TFDS image-classification set, and its train, val and test splits.
  config.data.tfds_name = ""
  config.data.tfds_splits = ("train", "validation", "test")
  # none | class_weights (loss weighted by inverse train counts) | resample
  # (classes drawn equally often).
  config.data.balance = "none"
  config.data.image_size = 224
  config.data.contrast = 1.5  # the published +50% contrast; 1.0 = off
  # Normalisation of [0, 1] RGB after contrast (ImageNet statistics).
  config.data.mean = (0.485, 0.456, 0.406)
  config.data.std = (0.229, 0.224, 0.225)
  # Decoded, resized uint8 images kept after the first pass: "none"; "memory"
  # (image folders that fit in RAM: N x size x size x 3 bytes); or "disk"
  # (any size, in cache_dir; reads then stream from it).
  config.data.cache = "none"
  # Examples held for shuffling by streamed sources (TFDS, disk cache): still
  # encoded JPEGs (~20 KB each for RSCD), or size x size x 3 bytes from the disk cache.
  config.data.shuffle_buffer = 8192
  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.flip = True  # random horizontal flip
  config.data.augment.crop_scale = 0.8  # random crop of at least this area; 1.0 = off
  config.data.augment.brightness = 0.1  # random brightness delta; 0 = off
  # The built-in synthetic road-texture set (data.source = synthetic).
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.train_per_class = 2000
  config.data.synthetic.val_per_class = 200
  config.data.synthetic.test_per_class = 400
  config.data.synthetic.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.head_input = "latent"  # latent | decoder
  config.model.dropout_rate = 0.5

  # Stages run in this order; each reads its encoder from `init_from`.
  config.stage_order = ("pretrain", "classify")
  config.stages = ml_collections.ConfigDict()
  config.stages.pretrain = stage(
      objective="reconstruction", optimizer="adam", learning_rate=1e-3,
      epochs=10, batch_size=32)
  config.stages.classify = stage(
      objective="classification", optimizer="sgd", learning_rate=0.1,
      epochs=10, batch_size=32, init_from="pretrain")

  config.eval_batch_size = 64
  config.log_every_steps = 50  # train metrics fetched from the device this often
  config.checkpoint_every_steps = 0  # 0 = at the end of every epoch only
  config.keep_checkpoints = 2  # latest N are kept, plus the best
  return config
