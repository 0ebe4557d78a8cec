"""Atomic file output: every result, report and checkpoint is written to a temporary file
beside its target and moved into place, so an interrupted run never leaves a torn file."""
import json
import os


def atomic_write(path, data):
    """Write ``data`` (str or bytes) to ``path`` atomically, creating parent directories."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb" if isinstance(data, (bytes, bytearray)) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


def atomic_write_json(path, payload):
    atomic_write(path, json.dumps(payload, indent=2) + "\n")
