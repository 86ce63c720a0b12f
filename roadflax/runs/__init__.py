"""A workdir on disk: `checkpoints` (one stage's Orbax checkpoints, latest
and best) and `workdirs` (run.json, config.json, which stages are complete,
the best parameters of a stage and the network that fits them).

Imports `roadflax.models` and the shared basics.
"""
