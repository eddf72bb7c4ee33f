"""The warm-up: ``trace``, ``mv`` and ``mm`` from nothing but ``as_strided`` and ``sum``.

``as_strided(size, stride, offset)`` re-reads a tensor's storage with a new
shape: element ``[i, j, ...]`` of the view lives at storage position
``offset + i*stride[0] + j*stride[1] + ...``. A stride of 0 repeats a tensor
along an axis without copying, and a stride that is the sum of two strides
walks a diagonal. Products are then one elementwise multiply of two views and
a ``sum`` over the shared axis.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["mm", "mv", "trace"]


def _check_dims(name: str, tensor: Tensor, dims: int) -> None:
    if tensor.dim() != dims:
        raise ValueError(f"{name}: expected a {dims}-D tensor, got shape {tuple(tensor.shape)}")


def trace(input: Tensor) -> Tensor:
    """Sum of the main diagonal of a 2-D tensor ``(n, m)`` -> scalar.

    View: ``(min(n, m),)`` with stride ``(s0 + s1,)``: one step down and one
    step right per element, i.e. the diagonal.
    """
    _check_dims("trace", input, 2)
    n = min(input.shape)
    s0, s1 = input.stride()
    diag = input.as_strided((n,), (s0 + s1,), input.storage_offset())
    return diag.sum()


def mv(input: Tensor, vec: Tensor) -> Tensor:
    """Matrix-vector product: ``(n, m) @ (m,) -> (n,)``.

    View: the vector ``(m,)`` is repeated into ``(n, m)`` with strides
    ``(0, vec.stride(0))`` (every row reads the same storage), multiplied with
    the matrix, and summed over ``m``.
    """
    _check_dims("mv", input, 2)
    _check_dims("mv", vec, 1)
    n, m = input.shape
    if vec.shape[0] != m:
        raise ValueError(f"mv: shapes {tuple(input.shape)} and {tuple(vec.shape)} do not match")
    rows = vec.as_strided((n, m), (0, vec.stride(0)), vec.storage_offset())
    return (input * rows).sum(1)


def mm(input: Tensor, mat2: Tensor) -> Tensor:
    """Matrix product: ``(n, k) @ (k, m) -> (n, m)``.

    Views: both operands become ``(n, m, k)``; ``input`` with strides
    ``(a0, 0, a1)`` (repeated over the columns ``m``), ``mat2`` with strides
    ``(0, b1, b0)`` (transposed and repeated over the rows ``n``). Their
    product summed over the last axis is the matrix product. (It materialises
    ``n*m*k`` products: a lesson, not a fast matmul.)
    """
    _check_dims("mm", input, 2)
    _check_dims("mm", mat2, 2)
    n, k = input.shape
    k2, m = mat2.shape
    if k != k2:
        raise ValueError(f"mm: shapes {tuple(input.shape)} and {tuple(mat2.shape)} do not match")
    a0, a1 = input.stride()
    b0, b1 = mat2.stride()
    a = input.as_strided((n, m, k), (a0, 0, a1), input.storage_offset())
    b = mat2.as_strided((n, m, k), (0, b1, b0), mat2.storage_offset())
    return (a * b).sum(-1)
