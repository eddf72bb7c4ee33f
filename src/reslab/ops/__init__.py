"""Neural-network ops from scratch: strided views plus reductions and matmuls.

Every op here is an ordinary differentiable function of torch tensors built
from primitives (``as_strided``, ``matmul``/``sum``/``mul``, ``pad``, ``max``,
``mean``); none calls torch.nn.functional's convolution, pooling, batch norm
or linear kernels. Autograd derives the backward passes; the one written by
hand is col2im, the adjoint of the im2col copy (itself a sum of strided views,
see :mod:`reslab.ops.windows`). Argument names and defaults mirror torch's
functions, so each op is a drop-in twin:

=======================  ==========================================
reslab.ops               torch
=======================  ==========================================
trace, mv, mm            torch.trace, torch.mv, torch.mm
conv2d                   torch.nn.functional.conv2d
max_pool2d, avg_pool2d   torch.nn.functional.max_pool2d/avg_pool2d
adaptive_avg_pool2d      torch.nn.functional.adaptive_avg_pool2d
batch_norm2d             torch.nn.functional.batch_norm
linear, relu             torch.nn.functional.linear/relu
flatten                  torch.flatten
=======================  ==========================================

The module versions (and a scratch ``Sequential``) live in
:mod:`reslab.layers.scratch`.
"""

from reslab.ops.basic import flatten, linear, relu
from reslab.ops.conv import conv2d
from reslab.ops.linalg import mm, mv, trace
from reslab.ops.norm import batch_norm2d
from reslab.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm2d",
    "conv2d",
    "flatten",
    "linear",
    "max_pool2d",
    "mm",
    "mv",
    "relu",
    "trace",
]
