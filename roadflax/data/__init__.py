"""Images to model input, in modules by concern:

  contract      split names; the split and data-set protocols sources keep
  image_folder  scanning and checking a ROOT/{train,val,test}/CLASS/ tree
  exif          which way up a photo is
  preprocess    one image as the model sees it (shared by every path)
  augment       random crop, flip and brightness, stateless
  batching      checked settings, batch counts, the pipelines' base class
  indexed       batches of an image folder's split, by index
  streaming     batches of a split read as a stream
  caches        decoded images kept in memory (per run) or on disk
  pipelines     `pipeline_for`: the pipeline serving a split

Imports only `roadflax.errors` and `roadflax.files` from the rest of roadflax;
never training, serving or results.
"""
