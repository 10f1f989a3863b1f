"""The wire format of the real edge-cloud link: no pickle anywhere.

One message is a 16-byte prefix, a JSON header and a body of raw tensor bytes:

- prefix: magic ``CEMA``, the protocol version (1 byte), 3 reserved bytes, the header length
  and the body length (big-endian uint32 each). A reader refuses a wrong magic or version, and
  a header or message over its limit, before it reads any further;
- header: UTF-8 JSON ``{"kind": str, "edge": str, "fields": tree, "tensors": [[dtype, shape,
  offset, nbytes], ...]}``. In ``tree``, a tensor is ``{"$t": index}``, a tuple ``{"$u": [...]}``,
  a dict ``{"$d": {...}}`` (string keys) and a non-finite float ``{"$f": "inf"}``; everything else
  is plain JSON (lists, strings, numbers, booleans, null);
- body: each tensor's bytes, C order, at an offset aligned to 8 bytes. Decoding checks every
  dtype against a fixed list, every shape against its byte count and every range against the
  body, and makes each tensor a view of the received buffer (no copy).

``WireError`` is every refusal; its message says what was wrong.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import torch

from cema_cli.link.channel import WIRE_FORM


MAGIC = b"CEMA"
VERSION = 1
PREFIX = struct.Struct(">4sB3xII")  # magic, version, reserved, header length, body length
ALIGN = 8
MAX_DEPTH = 32
MAX_DIMS = 8
HELLO_LIMIT = 64 * 1024  # an unauthenticated peer may send this much, no more
HEADER_LIMIT = 16 * 2**20

DTYPES = {name: getattr(torch, name) for name in
          ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64")}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class WireError(Exception):
    """A message refused: malformed, oversized, of another version, or not allowed here.
    ``category`` names the kind of refusal in the server's counts."""

    def __init__(self, message: str, category: str = "malformed message") -> None:
        super().__init__(message)
        self.category = category


@dataclass
class Message:
    """A decoded message: its kind, the sending edge's id, its fields; ``wire_bytes`` counts
    every byte it took on the wire (prefix, header and body)."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    edge: str = ""
    wire_bytes: int = 0


# --- encoding ---------------------------------------------------------------------------------

def encode(kind: str, fields: dict[str, Any], edge: str = "") -> list[bytes | memoryview]:
    """The buffers of one message, in order (write them with ``writelines``/``sendall``)."""
    tensors: list[torch.Tensor] = []
    tree = to_tree(fields, tensors)
    table, buffers, offset = [], [], 0
    for tensor in tensors:
        raw = tensor_bytes(tensor)
        pad = -offset % ALIGN
        if pad:
            buffers.append(bytes(pad))
        offset += pad
        table.append([DTYPE_NAMES[tensor.dtype], list(tensor.shape), offset, len(raw)])
        buffers.append(raw)
        offset += len(raw)
    header = json.dumps({"kind": kind, "edge": edge, "fields": tree, "tensors": table}, allow_nan=False,
                        separators=(",", ":")).encode()
    return [PREFIX.pack(MAGIC, VERSION, len(header), offset), header, *buffers]


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in C order, from the CPU (a view when it already is contiguous there)."""
    if tensor.dtype not in DTYPE_NAMES:
        raise WireError(f"tensor dtype {tensor.dtype} cannot cross the link; allowed: {', '.join(DTYPES)}")
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def to_tree(value: Any, tensors: list[torch.Tensor]) -> Any:
    """``value`` as the header's JSON tree; its tensors appended to ``tensors``. An uploaded
    sample with a wire form (link/channel.py) goes as its JPEG file (``$j``) or as float32 (``$w``)."""
    if isinstance(value, torch.Tensor):
        form = getattr(value, WIRE_FORM, None)
        tensors.append(torch.frombuffer(bytearray(form), dtype=torch.uint8) if isinstance(form, bytes)
                       else value.float() if form == "float32" else value)
        return {"$j" if isinstance(form, bytes) else "$w" if form == "float32" else "$t": len(tensors) - 1}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$f": repr(value)}
    if isinstance(value, (list, tuple)):
        items = [to_tree(v, tensors) for v in value]
        return {"$u": items} if isinstance(value, tuple) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$d": {k: to_tree(v, tensors) for k, v in value.items()}}
    raise WireError(f"a {type(value).__name__} cannot cross the link (tensors, numbers, strings, lists, tuples and str-keyed dicts can)")


def message_size(buffers: list[bytes | memoryview]) -> int:
    return sum(memoryview(b).nbytes for b in buffers)


# --- decoding ---------------------------------------------------------------------------------

def read_prefix(prefix: bytes, limit: int) -> tuple[int, int]:
    """(header length, body length) of a message, refused before anything else is read when the
    magic, the version or a size is wrong."""
    magic, version, header_len, body_len = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise WireError("not a cema message (bad magic)", "bad magic")
    if version != VERSION:
        raise WireError(f"protocol version {version}; this side speaks version {VERSION}: use the same cema version on both sides",
                        "wrong version")
    if header_len > min(limit, HEADER_LIMIT) or PREFIX.size + header_len + body_len > limit:
        raise WireError(f"message of {PREFIX.size + header_len + body_len} bytes is over the limit of {limit} bytes", "oversized message")
    return header_len, body_len


def decode(header: bytes, body: bytearray) -> Message:
    """A message from its header and body; every field checked (WireError otherwise)."""
    try:
        top = json.loads(header.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise WireError(f"malformed header ({type(error).__name__})") from None
    if not isinstance(top, dict) or set(top) != {"kind", "edge", "fields", "tensors"}:
        raise WireError("malformed header (expected kind, edge, fields and tensors)")
    if not isinstance(top["kind"], str) or not isinstance(top["edge"], str) or not isinstance(top["tensors"], list):
        raise WireError("malformed header (kind and edge are strings, tensors a list)")
    tensors = [checked_tensor(entry, body) for entry in top["tensors"]]
    fields = from_tree(top["fields"], tensors, 0)
    if not isinstance(fields, dict):
        raise WireError("malformed header (fields is not an object)")
    return Message(top["kind"], fields, top["edge"], PREFIX.size + len(header) + len(body))


def _refuse_constant(name: str) -> None:
    raise WireError(f"malformed header (bare {name})")


def checked_tensor(entry: Any, body: bytearray) -> torch.Tensor:
    """One tensor of the table, a view of ``body``; dtype, shape and range checked."""
    if not (isinstance(entry, list) and len(entry) == 4):
        raise WireError("malformed tensor entry")
    name, shape, offset, nbytes = entry
    if name not in DTYPES:
        raise WireError(f"tensor dtype {name!r} is not allowed")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(type(d) is int and d >= 0 for d in shape)):
        raise WireError("malformed tensor shape")
    if not (type(offset) is int and type(nbytes) is int and 0 <= offset and offset % ALIGN == 0 and offset + nbytes <= len(body)):
        raise WireError("tensor bytes outside the message body")
    dtype = DTYPES[name]
    count = math.prod(shape)
    if count * dtype.itemsize != nbytes:
        raise WireError(f"tensor of shape {shape} and dtype {name} cannot hold {nbytes} bytes")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)


def from_tree(node: Any, tensors: list[torch.Tensor], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireError("message nested too deeply")
    if isinstance(node, list):
        return [from_tree(v, tensors, depth + 1) for v in node]
    if not isinstance(node, dict):
        return node  # None, bool, int, float or str: json.loads makes nothing else
    if len(node) != 1:
        raise WireError("malformed value (an object must be one of $t, $u, $d, $f)")
    (tag, inner), = node.items()
    if tag in ("$t", "$j", "$w") and type(inner) is int and 0 <= inner < len(tensors):
        return {"$t": lambda t: t, "$j": jpeg_pixels, "$w": float_pixels}[tag](tensors[inner])
    if tag == "$u" and isinstance(inner, list):
        return tuple(from_tree(v, tensors, depth + 1) for v in inner)
    if tag == "$d" and isinstance(inner, dict):
        return {k: from_tree(v, tensors, depth + 1) for k, v in inner.items()}
    if tag == "$f" and inner in ("inf", "-inf", "nan"):
        return float(inner)
    raise WireError(f"malformed value ({tag!r})")


MAX_JPEG_PIXELS = 8192 * 8192


def jpeg_pixels(data: torch.Tensor) -> torch.Tensor:
    """An uploaded JPEG file as the (3, H, W) uint8 pixels the simulator's decoder gives."""
    import io

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if data.dtype != torch.uint8 or data.dim() != 1:
        raise WireError("malformed JPEG sample")
    try:
        image = Image.open(io.BytesIO(data.numpy().tobytes()))
        if image.format != "JPEG" or image.width * image.height > MAX_JPEG_PIXELS:
            raise WireError("a JPEG sample is not a JPEG file of at most 8192 x 8192 pixels")
        pixels = np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise WireError(f"malformed JPEG sample ({type(error).__name__})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def float_pixels(values: torch.Tensor) -> torch.Tensor:
    """A float32-encoded sample back to its uint8 pixels (exact: whole numbers 0-255)."""
    if values.dtype != torch.float32 or not bool(((values >= 0) & (values <= 255) & (values == values.round())).all()):
        raise WireError("a float32 sample holds values other than whole numbers 0-255")
    return values.to(torch.uint8)


# --- reading from a stream --------------------------------------------------------------------

CHUNK = 2**20


class PeerClosed(ConnectionError):
    """The peer closed the connection between two messages."""


async def read_message(reader: Any, limit: int, idle_timeout: float | None) -> Message:
    """The next message of an asyncio stream. ``PeerClosed`` between messages; a WireError for a
    message cut short (the peer closed mid-message); ``TimeoutError`` when a started message
    stalls for ``idle_timeout`` seconds (None: wait as long as it takes for the first byte too)."""
    try:
        prefix = await reader.readexactly(PREFIX.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise WireError(f"truncated message (the peer closed after {len(error.partial)} bytes)", "truncated message") from None
        raise PeerClosed("the peer closed the connection") from None
    header_len, body_len = read_prefix(prefix, limit)
    try:
        header = await asyncio.wait_for(reader.readexactly(header_len), idle_timeout)
        body = bytearray()
        while len(body) < body_len:  # chunk by chunk: a slow link may take long, a stalled one may not
            body += await asyncio.wait_for(reader.readexactly(min(CHUNK, body_len - len(body))), idle_timeout)
    except asyncio.IncompleteReadError:
        raise WireError(f"truncated message (the peer closed within a message of {header_len + body_len} bytes)",
                        "truncated message") from None
    return decode(header, body)


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over a model's parameters and buffers (names, dtypes, shapes and bytes): both ends
    of a link must start from the same weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{DTYPE_NAMES.get(tensor.dtype, tensor.dtype)}:{tuple(tensor.shape)};".encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()
