"""Training a config: config checks, the stage plan (steps, epochs, early
stopping), the health check, data-parallel sharding, evaluation and the stage
driver `train`, with a stage's train state and checkpoints in `stage_state`
and what it shows (progress bar, epoch lines, pictures) in `reporting`.

Imports data, datasets, models, runs and results; nothing imports it except
`main.py` and the benchmarks.
"""
