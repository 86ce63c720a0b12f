"""`python main.py ...` in a checkout: the `roadflax` command (roadflax/cli.py)."""

from roadflax import cli

if __name__ == "__main__":
  cli.main()
