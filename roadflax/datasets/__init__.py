"""Where images come from: the named sources a config picks (`data.source`):
image folders, the synthetic roadtex set, TFDS data sets and the RSCD
release (its reader, TFDS builder and build command), the real-photo
folders made from photographs that ship in packages, and images without
labels for a stage of its own (`unlabelled`: folders of images and videos).

Imports `roadflax.data` (splits, image checks), `roadflax.drives` (video
frames) and the shared basics; never models, training, serving or results.
"""
