"""Imports the official ResT / LIT / LITv2 PyTorch code for the golden generators (torch only).

Not used by the tests. The generators run the original model code unchanged; this module
only supplies what it imports and cannot run here:

* `timm`: the originals import `DropPath`, `to_2tuple`, `trunc_normal_`, `register_model`
  and `_cfg` from timm. timm (1.0) fails to import beside the torchvision build of this
  environment, so a stub provides these five with timm's definitions (DropPath is the
  identity in eval mode; the rest affect only initialisation, which the golden weights
  replace).
* `mm_modules.DCN` (LIT, LITv2): the authors' DCNv1 CUDA extension (with apex). A pure-torch
  `DeformConv2dPack` with the same parameters (`weight`, `bias`, `conv_offset`) and the
  CUDA kernel's sampling (`deform_conv2d_v1` below) replaces it.
* `params` (LIT-Ti): parses the command line at import; a stub `args` replaces it.
"""

import importlib
import math
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F


def deform_conv2d_v1(x, offset, weight, bias, stride, padding, dilation=(1, 1)):
  """DCNv1 as the authors' CUDA kernel computes it (`deform_2d_im2col_cuda.cuh`).

  Tap t = i * kw + j of output (ho, wo) samples (ho * sh - ph + i * dh + offset[2t],
  wo * sw - pw + j * dw + offset[2t + 1]); a sample outside (-1, H) x (-1, W) is 0, else
  bilinear with each corner outside the map 0 (`dmcn_2d_im2col_bilinear`); then the im2col
  columns times the weight, plus the bias. Works in the inputs' dtype (float32 or float64).
  """
  batch, channels, height, width = x.shape
  out_channels, _, kh, kw = weight.shape
  out_h, out_w = offset.shape[2:]
  taps = kh * kw
  off = offset.view(batch, taps, 2, out_h, out_w)
  tap_i = torch.arange(kh).repeat_interleave(kw).to(x.dtype)
  tap_j = torch.arange(kw).repeat(kh).to(x.dtype)
  base_y = (torch.arange(out_h, dtype=x.dtype) * stride[0] - padding[0])[None, None, :, None]
  base_x = (torch.arange(out_w, dtype=x.dtype) * stride[1] - padding[1])[None, None, None, :]
  y = base_y + (tap_i * dilation[0])[None, :, None, None] + off[:, :, 0]
  xs = base_x + (tap_j * dilation[1])[None, :, None, None] + off[:, :, 1]
  inside = (y > -1) & (xs > -1) & (y < height) & (xs < width)
  y0, x0 = torch.floor(y), torch.floor(xs)
  ly, lx = y - y0, xs - x0
  hy, hx = 1 - ly, 1 - lx
  flat = x.reshape(batch, channels, height * width)
  columns = torch.zeros(batch, channels, taps, out_h, out_w, dtype=x.dtype)
  for rows, cols, w in ((y0, x0, hy * hx), (y0, x0 + 1, hy * lx), (y0 + 1, x0, ly * hx),
                        (y0 + 1, x0 + 1, ly * lx)):
    valid = (rows >= 0) & (rows <= height - 1) & (cols >= 0) & (cols <= width - 1) & inside
    index = (rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)).long()
    values = torch.gather(flat, 2, index.reshape(batch, 1, -1).expand(-1, channels, -1))
    columns += values.view(batch, channels, taps, out_h, out_w) * (w * valid)[:, None]
  out = torch.einsum('bctyx,oct->boyx', columns, weight.reshape(out_channels, channels, taps))
  return out + bias[None, :, None, None]


class DeformConv2dPack(nn.Module):
  """The authors' `DeformConv2dPack` (parameters, init, forward), on `deform_conv2d_v1`."""
  returns_tuple = True  # LIT's returns (out, offset or None); LITv2's returns out.

  def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1,
               groups=1, deformable_groups=1, im2col_step=32, bias=True, lr_mult=0.1):
    super().__init__()
    assert groups == 1 and deformable_groups == 1
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    self.in_channels, self.out_channels = in_channels, out_channels
    self.kernel_size, self.stride = pair(kernel_size), pair(stride)
    self.padding, self.dilation = pair(padding), pair(dilation)
    self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
    self.bias = nn.Parameter(torch.empty(out_channels))
    nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(in_channels * self.kernel_size[0] * self.kernel_size[1])
    nn.init.uniform_(self.bias, -bound, bound)
    self.conv_offset = nn.Conv2d(in_channels, 2 * self.kernel_size[0] * self.kernel_size[1],
                                 kernel_size=self.kernel_size, stride=self.stride,
                                 padding=self.padding, bias=True)
    self.conv_offset.lr_mult = lr_mult
    nn.init.zeros_(self.conv_offset.weight)
    nn.init.zeros_(self.conv_offset.bias)

  def forward(self, input, return_offset=False):  # pylint: disable=redefined-builtin
    offset = self.conv_offset(input)
    out = deform_conv2d_v1(input, offset, self.weight, self.bias, self.stride, self.padding,
                           self.dilation)
    if not self.returns_tuple:
      return out
    return (out, offset) if return_offset else (out, None)


def _drop_path_class():
  class DropPath(nn.Module):
    """timm's DropPath (stochastic depth per sample)."""

    def __init__(self, drop_prob=0.0, scale_by_keep=True):
      super().__init__()
      self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    def forward(self, x):
      if self.drop_prob == 0.0 or not self.training:
        return x
      keep = 1 - self.drop_prob
      mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
      return x * mask / keep if self.scale_by_keep else x * mask
  return DropPath


def install_timm_stub():
  """The five timm names the originals import."""
  def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    return nn.init.trunc_normal_(tensor, mean, std, a, b)
  layers = types.ModuleType('timm.models.layers')
  layers.DropPath = _drop_path_class()
  layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
  layers.trunc_normal_ = trunc_normal_
  registry = types.ModuleType('timm.models.registry')
  registry.register_model = lambda fn: fn
  vit = types.ModuleType('timm.models.vision_transformer')
  vit._cfg = lambda url='', **kwargs: {'url': url, **kwargs}  # pylint: disable=protected-access
  timm = types.ModuleType('timm')
  models = types.ModuleType('timm.models')
  timm.models, models.layers, models.registry, models.vision_transformer = models, layers, registry, vit
  sys.modules.update({'timm': timm, 'timm.models': models, 'timm.models.layers': layers,
                      'timm.models.registry': registry,
                      'timm.models.vision_transformer': vit})


def install_dcn_stub(returns_tuple: bool):
  cls = type('DeformConv2dPack', (DeformConv2dPack,), {'returns_tuple': returns_tuple})
  names = ['mm_modules', 'mm_modules.DCN', 'mm_modules.DCN.modules',
           'mm_modules.DCN.modules.deform_conv2d']
  mods = {name: types.ModuleType(name) for name in names}
  mods['mm_modules.DCN.modules.deform_conv2d'].DeformConv2dPack = cls
  sys.modules.update(mods)


def import_official(root: str, module: str, *, dcn_returns_tuple: bool | None = None):
  """Imports `module` from the checkout `root`, the stubs installed and stale modules
  (`models`, `blocks`, ... of another repository) dropped first."""
  for name in list(sys.modules):
    if name.split('.')[0] in ('models', 'blocks', 'attention', 'patch_embed', 'lit', 'params',
                              'mm_modules', 'timm'):
      del sys.modules[name]
  install_timm_stub()
  if dcn_returns_tuple is not None:
    install_dcn_stub(dcn_returns_tuple)
  params = types.ModuleType('params')
  params.args = types.SimpleNamespace()
  sys.modules['params'] = params
  sys.path.insert(0, root)
  try:
    return importlib.import_module(module)
  finally:
    sys.path.remove(root)


__all__ = ['DeformConv2dPack', 'F', 'deform_conv2d_v1', 'import_official']
