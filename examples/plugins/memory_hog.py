"""Allocates memory until it hits its 256 MB limit."""

version = "1.0"
limits = {"memory_mb": 256, "timeout_s": 10}


def run(chunk_mb=32, max_mb=4096):
    chunks = []
    for _ in range(max_mb // chunk_mb):
        chunks.append(bytearray(chunk_mb * 1024 * 1024))
    return {"allocated_mb": len(chunks) * chunk_mb}
