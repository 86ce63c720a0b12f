"""From unlabelled drives to a labelled image folder: `candidates` (frames
of videos and images), `hashing` (near-duplicate frames), `queue` (frames
ordered by the model's doubt), `store` (labels written once, atomically),
`imports` (labels made elsewhere), `session` (what the app's Label page
works on), `label_mode` (`--mode=label`), and the label audit: `audit`
(`--mode=audit`) and `audit_files` (its files).

Imports data, datasets, drives, runs and training (the audit's probes); the
model comes in through `roadflax.load`. `serve` (the Label page) builds on it.
"""
