"""Using a trained workdir: `predict` (a classifier from a workdir, one-line
errors per bad file), `model` (`roadflax.load`: predictions, and
explanations with their heat maps, written as files by `explanations`),
`autoencoder` (reconstructions), the Streamlit web app `app` (the runs it may
open: `catalog`; what it does with the files: `uploads`, `videos`, `summary`;
what it draws: `cards`; its Label page: `label_page`) and `serving`
(`--mode=serve`).

Imports data, models, runs, results, export, drives and labelling (whose
audit's computation, not its files, uses training); never training.
"""
