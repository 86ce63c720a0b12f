"""What a run produced, for people: `reports` (per-class test reports),
`visuals` (confusion matrices and reconstruction grids as images) and
`compare` (`--mode=compare`: runs side by side, tables and curves).

Imports `roadflax.models`, `roadflax.runs` and the shared basics; never
training or serving.
"""
