"""Using a trained workdir: `predict` (a classifier from a workdir, one-line
errors per bad file), `autoencoder` (reconstructions), the Streamlit web app
`app` (what it does with the files: `uploads`) and `serving` (`--mode=serve`).

Imports data, models, runs and results; never training.
"""
