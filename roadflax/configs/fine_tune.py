"""Fine-tuning a trained classifier on new labels: the classifier stage
alone, starting from a trained run's encoder and head, at a tenth of the
default rate. For a labelled folder written by `--mode=label` or the app's
Label page (`ROOT/CLASS/GROUP/*.jpg`, split by group, so the test images
come from drives or folders the fine-tune never saw):

  python main.py --config=configs/fine_tune.py --workdir=runs/tuned \\
      --config.data.root=labelled --config.stages.classify.init_from=runs/roads

The input size, preprocessing and network must be the run's
(`--config.data.image_size=96` for the demo's, say), and the folder must
hold every class the run knows. The report gives the accuracy of the run
fine-tuned from on the same test images (`started_from`): before and after.
"""

from ml_collections import config_dict

from roadflax import configs


def get_config(base=None):
  config = configs.base_config(base)
  config.stage_order = ("classify",)
  config.stages.classify.update(learning_rate=3e-5, min_steps=100)
  # Unset: the checks ask for the run to fine-tune (a workdir or STAGE dir).
  config.stages.classify.init_from = config_dict.placeholder(str)
  return config
