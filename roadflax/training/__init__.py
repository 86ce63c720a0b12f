"""Training a config: config checks, the stage plan (steps, epochs, early
stopping), the health check, data-parallel sharding, evaluation (with
`calibrate`, the temperature a classifier's logits are scaled by) and the
stage driver `train`, with a stage's train state and checkpoints in `stage_state`
and what it shows (progress bar, epoch lines, pictures) in `reporting`;
`split_record` keeps WORKDIR/split.json (the groups and split trained on,
near-duplicates between splits).

Imports data, datasets, models, runs and results; nothing imports it except
`main.py` and the benchmarks.
"""
