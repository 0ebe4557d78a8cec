"""Atomic file output: every result, report and model file is written to a temporary file
beside its target and moved into place, so an interrupted run never leaves a torn file."""
import hashlib
import json
import os
import tempfile


def atomic_write(path, data):
    """Write ``data`` (str or bytes) to ``path`` atomically, creating parent directories."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tfq_", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, (bytes, bytearray)) else "w") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, payload):
    atomic_write(path, json.dumps(payload, indent=2) + "\n")


def file_sha256(path, length=16):
    """The first ``length`` hex digits of a file's SHA-256 (which checkpoint a result used)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]
