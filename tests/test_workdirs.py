"""Choosing a workdir's classification stage: one rule for predict, evaluate,
serve and the app."""

import shutil

import pytest

from roadflax.runs import workdirs
from roadflax.serve import predict
from roadflax.training import evaluate
from roadflax.errors import UserError
from tests import helpers


def test_classifier_stage_defaults_to_the_last_classification_stage(
    trained_workdir,
):
  assert workdirs.classifier_stages(trained_workdir) == ["classify"]
  assert workdirs.classifier_stage(trained_workdir) == "classify"
  assert workdirs.classifier_stage(trained_workdir, "classify") == "classify"


def test_a_stage_that_does_not_classify_is_refused(trained_workdir):
  with pytest.raises(
      UserError,
      match=r"no trained classification stage 'pretrain' "
      r"\(it has: classify\)",
  ):
    workdirs.classifier_stage(trained_workdir, "pretrain")


@pytest.mark.parametrize(
    "use",
    [
        lambda workdir: workdirs.classifier_stage(workdir),
        lambda workdir: predict.Classifier.load(workdir),
        lambda workdir: evaluate.evaluate_workdir(workdir, None),
    ],
    ids=["classifier_stage", "predict", "evaluate"],
)
def test_a_workdir_without_a_trained_classifier_is_refused_alike(
    use, trained_workdir, tmp_path
):
  shutil.copytree(
      trained_workdir,
      tmp_path,
      dirs_exist_ok=True,
      ignore=shutil.ignore_patterns("classify"),
  )
  with pytest.raises(
      UserError,
      match=r"has no trained classification stage yet; train one first",
  ):
    use(str(tmp_path))


def test_the_network_has_the_head_width_its_run_recorded(trained_workdir):
  run = workdirs.load_run(trained_workdir)
  assert run["head_units"] == helpers.HEAD_UNITS
  assert workdirs.network(run).head_units == helpers.HEAD_UNITS
  # Runs written before the width could be chosen have the published head.
  del run["head_units"]
  assert workdirs.network(run).head_units == 4096
