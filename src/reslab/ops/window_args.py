"""Small helpers shared by the ops: argument normalisation and output sizes."""

from __future__ import annotations

from collections.abc import Sequence

IntPair = int | Sequence[int]


def pair(value: IntPair, name: str = "argument") -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(2, 3) -> (2, 3)``, ``(4,) -> (4, 4)`` (torch accepts all three)."""
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return values


def window_out_size(
    size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool
) -> int:
    """Number of sliding-window positions along one axis, with torch's pooling formula.

    ``ceil_mode`` rounds up, but the last window must still start inside the
    input or its left padding (torch drops it otherwise).
    """
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def right_pad(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Right (or bottom) padding that makes all ``out`` windows fit after ``pad`` on the left.

    It is less than ``pad`` when the last windows never reach the padding, and
    more than ``pad`` in ceil mode, when the last window hangs over the edge.
    """
    needed = (out - 1) * stride + dilation * (kernel - 1) + 1
    return max(0, needed - size - pad)


def check_window(out_h: int, out_w: int, in_h: int, in_w: int) -> None:
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"output size {out_h}x{out_w} is too small for input {in_h}x{in_w} "
            "(the window does not fit)"
        )
