"""Where images come from: the named sources a config picks (`data.source`):
image folders, the synthetic roadtex set, TFDS data sets and the RSCD
release (its reader, TFDS builder and build command), and the real-photo
folder made from photographs that ship with scikit-image.

Imports `roadflax.data` (splits, image checks) and the shared basics; never
models, training, serving or results.
"""
