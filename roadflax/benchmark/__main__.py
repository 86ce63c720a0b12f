"""`python -m roadflax.benchmark`: see `roadflax.benchmark.suites`."""

from absl import app

from roadflax.benchmark import suites

if __name__ == "__main__":
  app.run(suites.main)
