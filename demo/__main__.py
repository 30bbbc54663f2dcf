import sys

from common.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("demo.run", sys.argv[1:], prog="python -m demo"))
