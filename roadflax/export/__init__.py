"""A trained classifier outside its workdir, for servers, phones and vehicles.

  trained      the one JAX function every export converts: uint8 pixels in,
               temperature-scaled probabilities out (and, for a workdir,
               Grad-CAM heat maps beside them)
  converters   that function as a SavedModel, TFLite (float or int8) or ONNX
               file
  exporters    `--mode=export`: the file, its metadata and model card
               (`cards`), after measuring its parity with JAX (`parity`) on
               test images (`samples`)
  runtimes     an export run again by its format's runtime, or another
               engine that runs its file (`load_export`)
  choice       the runtime behind a workdir's predictions: each built and
               measured once (`--mode=runtimes`), the fastest that keeps its
               bound with JAX chosen (`runtime="auto"`)
  evaluation   `--mode=evaluate` of an export: its own test report

Imports data, datasets, models, runs and results; never training or serve.
"""
