"""Images to model input, in modules by concern:

  contract      split names; the split and data-set protocols sources keep
  image_folder  scanning and checking a ROOT/{train,val,test}/CLASS/ tree
  grouped_folder  either layout, each image with its group; ROOT/CLASS/...
                split by group
  groups        an image's group: subfolder, file-name prefix, day, file
  group_split   train, val and test of whole groups, stratified by class
  keypoints     local features of a thumbnail
  near_duplicates  held-out images that a train image shows again
  exif          which way up a photo is, and the day it was taken
  preprocess    one image as the model sees it (shared by every path)
  augment       random crop, rotation, flips, colour, gamma and blur,
                stateless
  batching      checked settings, batch counts, the pipelines' base class
  indexed       batches of an image folder's split, by index
  streaming     batches of a split read as a stream
  caches        decoded images kept in memory (per run) or on disk
  pipelines     `pipeline_for`: the pipeline serving a split

Imports only `roadflax.errors` and `roadflax.files` from the rest of roadflax;
never training, serving or results.
"""
