"""The network and what trains it, as pure functions: `roadnet` (the
AlexNet-style autoencoder with its classifier head), `layer_table` (its
per-layer table for `--mode=summary`), `fast_layers`,
`precision` (the dtype it computes in), `objectives` (losses and metrics per
stage objective), `optimizers` (schedules and optax chains) and `steps`
(jit-compiled train, eval, predict and reconstruct steps), `test_time`
(test-time augmentation inside the eval and predict steps) and `saliency`
(Grad-CAM heat maps of a prediction).

Imports only the shared basics; never data, training or serving.
"""
