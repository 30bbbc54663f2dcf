import sys

from common.cli import Command, dispatch

COMMANDS = {
    "serve": Command("api.serve", "run the search API (uvicorn); --embedded also starts the embedded tritonserver"),
    "key": Command("api.key_cli", "make a new API key and the hashed entry for the keys file"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m api", "CloudTune search API", COMMANDS))
