import sys

from common.cli import Command, dispatch

COMMANDS = {
    "search": Command("client.search_cli", "search the catalog with an audio file"),
    "health": Command("client.health_cli", "server liveness/readiness and model status"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m client", "CloudTune audio search client", COMMANDS))
