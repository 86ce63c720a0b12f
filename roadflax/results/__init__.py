"""What a run produced, for people: `reports` (per-class test reports, with
`group_accuracy`: accuracy per drive, day or photograph),
`calibration` (calibration error and reliability diagrams), `visuals`
(confusion matrices, reconstruction grids and explanations as images) and
`compare` (`--mode=compare`: runs side by side, tables and curves).

Imports `roadflax.models`, `roadflax.runs` and the shared basics; never
training or serving.
"""
