"""Find a running tritonserver and its Python-backend stubs through /proc (Linux), and read their memory.

Works for any server on this machine, whoever started it: the process is found by the port it
listens on. Python models run in separate stub processes, so their memory is not in the server's RSS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
STUB_BINARY = "triton_python_backend_stub"
TCP_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def pid_listening_on(port: int) -> int | None:
    """The process with a listening TCP socket on ``port`` (None if none, or if not ours to inspect)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for pid in _pids():
        try:
            for fd in (PROC / str(pid) / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return pid
        except OSError:  # gone, or not readable
            continue
    return None


def rss_bytes(pid: int) -> int:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _parent(pid: int) -> int:
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    stat = (PROC / str(pid) / "stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str
    instance: str


def python_stubs(server_pid: int) -> list[Stub]:
    """The server's Python-backend stub processes (one per model instance), with their model names."""
    stubs = []
    for pid in _pids():
        try:
            if _parent(pid) != server_pid:
                continue
            argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0].decode(errors="replace").endswith(STUB_BINARY) or len(argv) < 2:
            continue
        model_file = Path(argv[1].decode(errors="replace"))  # <repository>/<model>/<version>/model.py
        instance = argv[8].decode(errors="replace") if len(argv) > 8 else ""
        stubs.append(Stub(pid, model_file.parents[1].name, instance))
    return sorted(stubs, key=lambda stub: (stub.model, stub.instance))


def memory_snapshot(server_pid: int) -> dict[str, int]:
    """RSS bytes of the server and of each stub (by instance), and their total."""
    snapshot = {"tritonserver": rss_bytes(server_pid)}
    for stub in python_stubs(server_pid):
        try:
            snapshot[f"stub:{stub.instance or stub.model}"] = rss_bytes(stub.pid)
        except OSError:
            continue
    snapshot["total"] = sum(snapshot.values())
    return snapshot
