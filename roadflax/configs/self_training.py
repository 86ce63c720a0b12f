"""The base config plus one round of semi-supervised fine-tuning: a stage
`self_train` that starts from the classifier and trains on the labelled
split plus the unlabelled pool images it labels with probability >= 0.9
(training/pseudo_labels.py). Give the pool:

  python main.py --config=configs/self_training.py --workdir=runs/self \\
      --config.data.root=/data/labelled \\
      --config.stages.self_train.data.root=/data/dashcam
"""

from roadflax import configs


def get_config(base=None):
  config = configs.base_config(base)
  self_train = config.stages.classify.copy_and_resolve_references()
  self_train.update(init_from="classify", pseudo_label_threshold=0.9)
  self_train.data.source = "folder"
  config.stages.self_train = self_train
  config.stage_order = (*config.stage_order, "self_train")
  return config
