"""The published method at 224x224: autoencoder pre-training, then a classifier.

The published network, input size and stages, trained so that they learn a
hundred photos per class as well as a million frames: each stage runs at
least `min_steps` steps, warms up for one epoch, decays its learning rate
along a cosine, clips gradients at norm 1 and, on a validation split large
enough to judge by, stops early on a plateau; the classifier uses Adam at
3e-4 (docs/study/published_recipe.md). `published.py` is the published recipe as it was (constant
rates, SGD 0.1 for the classifier).

Train on your own image-folder tree:
  python main.py --config=configs/default.py --workdir=runs/roads \
      --config.data.root=/data/roads
"""

import ml_collections
from ml_collections import config_dict


def stage(**overrides) -> ml_collections.ConfigDict:
  """One training stage with every field present, so any can be overridden."""
  fields = dict(
      objective="classification",  # reconstruction | classification | joint | contrastive
      optimizer="sgd",  # sgd | momentum | adam | adamw
      learning_rate=0.1,
      momentum=0.9,  # used by `momentum` only
      schedule="constant",  # constant | cosine | step
      warmup_epochs=0.0,
      decay_epochs=(),  # `step` schedule: epochs at which the rate is multiplied
      decay_factor=0.1,  # ... by this factor
      weight_decay=0.0,  # decoupled for adamw, added to the gradient otherwise
      grad_clip_norm=0.0,  # 0 = no clipping
      # Length in passes over the train split; a small split is passed over
      # more often, so that the stage runs at least `min_steps` steps (its
      # schedule and patience then count epochs of total_steps / epochs steps).
      epochs=10,
      min_steps=0,
      # > 0: exactly this many steps, whatever `epochs` (which then sets how
      # often the stage validates: every steps / epochs, at least a pass).
      steps=0,
      # Stop when the validation metric that picks the best checkpoint has not
      # improved for this many epochs (0 = off); the best checkpoint is kept.
      early_stopping_patience=0,
      # The checkpoint the stage hands on (to the next stage, the test
      # report, predict, the app and exports): best (by validation; early
      # stopping may end the stage) | last (the final weights; the stage runs
      # its whole length) | auto (best when the validation split holds at
      # least `select_min_val_images` images, else last: on fewer, the
      # checkpoints' validation scores differ by less than their noise, a
      # binomial standard error of 5 points at 90 images, and the best is
      # the luckiest, not the best on new roads).
      select="auto",
      select_min_val_images=300,
      batch_size=32,  # global batch, split over all devices
      # Each step's batch in this many micro-batches, their gradients
      # averaged: the memory of batch_size / accumulate_steps, the update of
      # the whole batch (batch_size must be a multiple of accumulate_steps x
      # devices).
      accumulate_steps=1,
      # > 0: an exponential moving average of the trained weights, with
      # decay min(ema_decay, (1 + step) / (10 + step)); validation, the best
      # checkpoint and every use of the stage read the average (e.g. 0.999).
      ema_decay=0.0,
      freeze_encoder=False,
      init_from="",  # "" | name of an earlier stage | path to a workdir stage
      label_smoothing=0.0,
      reconstruction_weight=1.0,  # `joint` only: CE + weight * MSE
      # Reconstruction from a corrupted input, in training only: none |
      # noise (Gaussian, this std in normalised units) | mask (this share of
      # 16x16 patches hidden).
      corruption="none",
      corruption_amount=0.0,
      # `contrastive` (SimCLR's NT-Xent between two random views of each
      # image, models/views.py; the head's fc1 and fc2 its projection): the
      # temperature of its cosine similarities.
      contrastive_temperature=0.1,
      # > 0, a classification stage with data of its own (the unlabelled
      # pool) and `init_from` a classifier: semi-supervised fine-tuning on
      # the labelled train split plus the pool images that classifier gives
      # a class with at least this probability (training/pseudo_labels.py).
      pseudo_label_threshold=0.0,
      # Data of the stage's own, its labels ignored (a reconstruction or
      # contrastive stage; a classification stage's pool of pseudo-labels): the run's labelled train split while
      # `source` is unset; else any field left unset is the run's `data`
      # field. source folder: every image under `root`, at any depth, and a
      # frame every `video_every_seconds` of every video there; tfds or
      # rscd: that set's train split.
      data=ml_collections.ConfigDict({
          "source": config_dict.placeholder(str),
          "root": config_dict.placeholder(str),
          "tfds_name": config_dict.placeholder(str),
          "manual_dir": config_dict.placeholder(str),
          "variant": config_dict.placeholder(str),
          "data_dir": config_dict.placeholder(str),
          "video_every_seconds": 1.0,
      }),
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
  # A folder of class folders alone (ROOT/CLASS/..., images at any depth) is
  # split by group, so that no drive, video, day or photograph is in two
  # splits (data/groups.py): subfolder (the first folder below the class
  # folder) | prefix (the file name's match of group_pattern) | day (EXIF
  # DateTimeOriginal, else a YYYYMMDD in the name) | file (each image alone:
  # an i.i.d. split, which can leak). Split folders keep their split; their
  # groups give the test report its per-group accuracy.
  config.data.group_by = "subfolder"
  # prefix: its first group is the key ("drive03_000123.jpg" -> "drive03").
  config.data.group_pattern = r"^(.*?)[-_ .]*\d+\.\w+$"
  # Each class's share of images in val and test (whole groups; train takes
  # the rest), and the seed of the order groups are dealt in.
  config.data.val_fraction = 0.15
  config.data.test_fraction = 0.2
  config.data.split_seed = 0
  # At the start of training, val and test images with a near-duplicate in
  # train (the same photo cropped, zoomed, re-exposed or mirrored) are
  # counted into WORKDIR/split.json (data/near_duplicates.py), comparing at
  # most this many images of each split, evenly spread (about 8 ms of CPU an
  # image; 0 = no check).
  config.data.near_duplicate_images = 3000
  # Where roadtex is generated, and the disk cache and TFDS class counts are
  # kept ("" = ~/.cache/roadflax).
  config.data.cache_dir = ""
  # rscd: the downloaded release (its zip, or train/, vali_20k/, test_50k/),
  # read once to build the TFDS data set `rscd/<variant>` in data_dir.
  config.data.manual_dir = ""
  config.data.variant = (  # 3class | 27class | 3class_by_day | 27class_by_day
      "3class"
  )
  config.data.data_dir = (  # rscd and tfds: TFDS data_dir ("" = ~/tensorflow_datasets)
      ""
  )
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
  # Decoded, resized uint8 images kept after the first pass: "auto" (an image
  # folder's split in memory when it takes at most 3 GiB, else none); "none";
  # "memory" (image folders that fit in RAM: N x size x size x 3 bytes); or
  # "disk" (any size, in cache_dir; reads then stream from it).
  config.data.cache = "auto"
  # Examples held for shuffling by streamed sources (TFDS, disk cache): still
  # encoded JPEGs (~20 KB each for RSCD), or size x size x 3 bytes from the disk cache.
  config.data.shuffle_buffer = 8192
  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.flip = True  # random horizontal flip
  config.data.augment.crop_scale = (
      0.8  # random crop of at least this area; 1.0 = off
  )
  config.data.augment.brightness = 0.1  # random brightness delta; 0 = off
  # The crop's widest width / height: aspect ratios in [1 / a, a].
  config.data.augment.crop_aspect = 4 / 3
  # Texture seen from above: no up or down; turned by an angle in [-d, d]
  # and zoomed in so that no corner is empty. Off (False, 0) by default.
  config.data.augment.vertical_flip = False
  config.data.augment.rotate_degrees = 0.0
  # Light and camera, each off at 0: contrast and saturation factors in
  # [1 - x, 1 + x]; hue turned by up to this share of the colour wheel
  # (0.5 = any hue); per-channel white-balance gains in [1 - w, 1 + w]; the
  # probability of a grey image; gamma exponents log-uniform in
  # [1 / gamma, gamma] (0 = off, else >= 1).
  config.data.augment.contrast = 0.0
  config.data.augment.saturation = 0.0
  config.data.augment.hue = 0.0
  config.data.augment.white_balance = 0.0
  config.data.augment.grayscale = 0.0
  config.data.augment.gamma = 0.0
  # Focus: a Gaussian blur of sigma in (0, blur_sigma] pixels for this share
  # of the images (both > 0 to blur).
  config.data.augment.blur_probability = 0.0
  config.data.augment.blur_sigma = 0.0
  # The built-in synthetic road-texture set (data.source = synthetic).
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.train_per_class = 2000
  config.data.synthetic.val_per_class = 200
  config.data.synthetic.test_per_class = 400
  config.data.synthetic.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.head_input = "latent"  # latent | decoder
  config.model.dropout_rate = 0.5
  # Units of the head's two hidden dense layers: the published 4096 (about 43M
  # of the classifier's 47M parameters at 224 px); fewer make a smaller, faster
  # model and checkpoint.
  config.model.head_units = 4096
  # "group": GroupNorm after every convolution (not in the published network).
  config.model.norm = "none"
  # What convolutions and dense layers compute in: auto (bfloat16 on GPUs and
  # TPUs, float32 on CPUs) | float32 | bfloat16 | float16. Parameters,
  # optimiser state, losses and softmax stay float32; a workdir may resume or
  # be evaluated in any of them.
  config.model.dtype = "auto"
  # Test-time augmentation, in validation, the test report, calibration,
  # prediction and exports: none | flips (the mean softmax of the image and
  # its mirror images, 4 passes) | flips_rot90 (and their 90-degree turns, 8).
  config.model.tta = "none"

  # Stages run in this order; each reads its encoder from `init_from`.
  config.stage_order = ("pretrain", "classify")
  config.stages = ml_collections.ConfigDict()
  # Without warm-up and clipping this network (no normalisation layers)
  # diverges or collapses to one class at these rates on small data sets.
  stabilised = dict(
      schedule="cosine", warmup_epochs=1.0, grad_clip_norm=1.0, batch_size=32
  )
  # The autoencoder reconstructs each image from a noisy copy (denoising):
  # with 10 labels per class of photographs never seen in training it beat
  # the published plain reconstruction and training from scratch by 10
  # points (docs/guides/pretraining.md); with all labels it scores as they
  # do. `published.py` keeps the plain reconstruction.
  config.stages.pretrain = stage(
      objective="reconstruction",
      corruption="noise",
      corruption_amount=0.5,
      optimizer="adam",
      learning_rate=1e-3,
      epochs=10,
      min_steps=80,
      early_stopping_patience=3,
      **stabilised,
  )
  # 1e-3 kills the pre-trained encoder's ReLUs on roadtex; 1e-4 learns slowly.
  config.stages.classify = stage(
      objective="classification",
      optimizer="adam",
      learning_rate=3e-4,
      epochs=10,
      min_steps=300,
      early_stopping_patience=5,
      init_from="pretrain",
      **stabilised,
  )

  # A stage that is not learning says so in one line (health.py): the loss at
  # chance, predictions collapsed to one class, or the encoder's activations
  # grown (or shrunk) this many times over, for `window_steps` steps (0 = no
  # checks).
  config.health = ml_collections.ConfigDict()
  config.health.window_steps = 100
  config.health.collapse_fraction = 0.95
  config.health.activation_growth = 10.0

  # Temperature scaling at the end of each classification stage
  # (training/calibrate.py) keeps T = 1 where the validation split cannot
  # justify another: with fewer than `min_images` images (too few to pin T
  # down), and, for a T < 1 that makes answers more confident, unless every
  # class has `min_groups_to_sharpen` independent groups (source photographs,
  # videos, subfolders: frames of one are not independent) and, with
  # `held_out_folds` > 0, temperatures fitted with whole groups held out
  # lower those groups' NLL (0 = no such check).
  config.calibration = ml_collections.ConfigDict()
  config.calibration.min_images = 100
  config.calibration.min_groups_to_sharpen = 5
  config.calibration.held_out_folds = 5

  config.eval_batch_size = 64
  config.log_every_steps = (
      50  # train metrics fetched from the device this often
  )
  config.checkpoint_every_steps = 0  # 0 = at the end of every epoch only
  config.keep_checkpoints = 2  # latest N are kept, plus the best
  # > 0: a JAX profiler trace of this many train steps of each stage, after
  # its first 2, in WORKDIR/STAGE/plugins/profile (TensorBoard's Profile tab).
  config.profile_steps = 0
  return config
