"""Videos of a drive, classified over time: `frames` (PyAV decoding and
sampling), `timeline` (`classify_video`: the sampled frames through any
model with `predict`, such as `roadflax.load`'s; timeline.csv), `segments`
(stretches of one class, short flickers removed), `plots` (timeline.png),
`gpx` (a GPS track: where the car was when), `maps` (GeoJSON and the HTML
map) and `outputs` (every file of one video in its folder).

Imports only the shared basics (errors, files): the model comes in as an
argument, so `serve` (the `--mode=predict` command on videos in
`serve.video_predict`, and the app) builds on it.
"""
