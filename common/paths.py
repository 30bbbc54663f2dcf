"""Where the checkout's shared folders are: what both the artifact makers (export) and the server (serving) read."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The source-controlled repository: generated configs, model code, and the published artifacts.
DEFAULT_REPOSITORY = REPO_ROOT / "model_repository"
