"""`python -m roadflax.benchmark`: speed of the input pipelines and of the
model steps (`model_benchmark`, against a Keras build of the same network),
and `keras_side_by_side`, the same training in Keras and roadflax.

May import anything of roadflax; nothing imports it.
"""
