"""The grader-worker wire: length-prefixed frames of `torch.save` bytes, and the checks a reply
passes before the grader trusts any of it (stored zip members of declared sizes, plain values
only, no shared references, a budget of values and tensor bytes)."""
from __future__ import annotations

import io
import os
import struct



GiB, MiB = 2**30, 2**20
HEADER = struct.Struct(">Q")


# ----------------------------------------------------------------------------- the wire

def encode(value) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def decode(data: bytes):
    """Bytes from the other process -> plain values. Never unpickles: weights_only=True."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


class BadResult(ValueError):
    """What came back from the worker is not made of plain values."""


def check_stored(data: bytes, limit: int) -> None:
    """A reply must be what torch.save writes: a zip of stored (uncompressed) members whose
    declared sizes add up to no more than the reply itself. A deflated member could inflate to
    gigabytes inside torch.load (holding the GIL), so it is refused unread."""
    import zipfile

    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadResult(f"not a torch.save archive ({exc})") from None
    total = 0
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED or m.file_size != m.compress_size:
            raise BadResult(f"a compressed member {m.filename[:80]!r} (replies are stored as "
                            f"torch.save writes them)")
        total += m.file_size
    if total > min(limit, len(data)):
        raise BadResult(f"members declare {total} bytes, more than the reply holds")


class Budget:
    """How much a reply may expand to: containers and tensor elements, counted as checked."""

    def __init__(self, items: int = 1_000_000, tensor_bytes: int = 256 * MiB):
        self.items, self.tensor_bytes = items, tensor_bytes
        self.seen: set[int] = set()

    def spend(self, items: int = 1, tensor_bytes: int = 0) -> None:
        self.items -= items
        self.tensor_bytes -= tensor_bytes
        if self.items < 0:
            raise BadResult("too many values (more than a probe ever returns)")
        if self.tensor_bytes < 0:
            raise BadResult("tensors larger than grading allows (an expanded view?)")


def check_plain(value, depth: int = 0, budget: Budget | None = None):
    """`value` rebuilt from plain types only (what a probe may return); BadResult otherwise.
    A list or dict that appears twice (shared references, which expand exponentially when
    rebuilt) is refused, and the whole value must stay within a budget."""
    import torch

    budget = budget if budget is not None else Budget()
    if depth > 40:
        raise BadResult("nested too deeply")
    budget.spend()
    kind = type(value)
    if kind in (torch.Tensor, torch.nn.Parameter):
        if (value.layout != torch.strided or value.is_quantized or value.device.type != "cpu"
                or getattr(value, "is_nested", False)):
            raise BadResult(f"a tensor with layout {value.layout} on {value.device}")
        plain = value.detach()
        if type(plain) is not torch.Tensor:
            raise BadResult(f"a {type(plain).__name__}")
        budget.spend(tensor_bytes=plain.numel() * plain.element_size())
        return plain
    if kind in (int, float, bool, type(None)):
        return value
    if kind is str:
        budget.spend(items=len(value) // 64)
        return value
    if kind in (list, tuple, dict):
        if id(value) in budget.seen:
            raise BadResult("a list or dict that appears more than once (shared references)")
        budget.seen.add(id(value))
    if kind in (list, tuple):
        return [check_plain(v, depth + 1, budget) for v in value]
    if kind is dict:
        if not all(type(k) is str for k in value):
            raise BadResult("a dict with keys that are not str")
        return {k: check_plain(v, depth + 1, budget) for k, v in value.items()}
    raise BadResult(f"a {kind.__name__}")


def write_frame(fd: int, data: bytes) -> None:
    """Blocking write of one frame (the worker's side)."""
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_frame(fd: int) -> bytes | None:
    """Blocking read of one frame (the worker's side); None at end of file."""
    def exactly(n):
        chunks = []
        while n:
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    header = exactly(HEADER.size)
    if header is None:
        return None
    return exactly(HEADER.unpack(header)[0])


