"""Training a config: config checks, the stage plan (steps, epochs, early
stopping), the health check, data-parallel sharding, evaluation and the stage
driver `train`.

Imports data, datasets, models, runs and results; nothing imports it except
`main.py` and the benchmarks.
"""
