"""Images to model input: folder scanning and checks, EXIF orientation,
preprocessing, augmentation, and the tf.data pipelines that batch a split
(index-ordered or streamed, optionally cached).

Imports only `roadflax.errors` and `roadflax.files` from the rest of roadflax;
never training, serving or results.
"""
