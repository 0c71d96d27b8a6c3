"""Writes the LIT / LITv2 goldens of this directory from the official PyTorch code (torch only).

  python tests/golden/lit/generate.py --lit /path/to/ziplab/LIT --litv2 /path/to/ziplab/LITv2 \
      [--only NAME ...]

Not run by the tests: it documents how the files here were made (README.md). The official
checkouts (`ziplab/LIT` HEAD 742e961, `ziplab/LITv2` HEAD 7501c86) are imported unchanged;
`official_env` supplies timm's names and a pure-torch DCNv1 (`deform_conv2d_v1`, the CUDA
kernel's sampling) in place of the authors' CUDA extension. Needs yacs for the CfgNode.
"""

import argparse
import argparse as argparse_for_files  # The Namespace pickled beside the tiny weights.
import collections
import functools
import json
import os
import pathlib
import sys

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import official_env  # pylint: disable=g-import-not-at-top,wrong-import-position
import recipe  # pylint: disable=g-import-not-at-top,wrong-import-position

SIZES = (224, 256)
_S = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])
_M = dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24])
_B = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
V2 = dict(alpha=0.9, local_ws=[0, 0, 2, 1])  # configs/litv2-*.yaml
FULL = {
    'lit_ti': ('ti', {}),
    'lit_s': ('lit', _S), 'lit_m': ('lit', _M), 'lit_b': ('lit', _B),
    'litv2_s': ('litv2', {**_S, **V2}), 'litv2_m': ('litv2', {**_M, **V2}),
    'litv2_b': ('litv2', {**_B, **V2}),
}
_TINY = dict(embed_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], num_classes=10)
TINY = {
    'tiny_lit': ('lit', _TINY, (64,)),
    'tiny_litv2': ('litv2', {**_TINY, **V2}, (64, 96)),
    'tiny_lit_ti': ('ti', dict(embed_dims=[8, 16, 32, 64], num_heads=[1, 2, 4, 8],
                               mlp_ratios=[8, 8, 4, 4], depths=[1, 1, 2, 1], num_classes=10),
                    (64,)),
}


class Official:
  """The three official model definitions."""

  def __init__(self, lit_root: str, litv2_root: str):
    s_m_b = os.path.join(lit_root, 'classification', 'code_for_lit_s_m_b')
    self.config = official_env.import_official(s_m_b, 'config')
    self.lit = official_env.import_official(s_m_b, 'models.lit', dcn_returns_tuple=True)
    self.ti = official_env.import_official(
        os.path.join(lit_root, 'classification', 'code_for_lit_ti'), 'lit',
        dcn_returns_tuple=True)
    self.litv2 = official_env.import_official(os.path.join(litv2_root, 'classification'),
                                              'models.litv2', dcn_returns_tuple=False)

  def build(self, kind: str, kwargs: dict, size: int):
    if kind == 'ti':
      if not kwargs:
        return self.ti.lit_ti(img_size=size)
      return self.ti.LIT(img_size=size, patch_size=4, qkv_bias=True,
                         norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6), **kwargs)
    cls = self.lit.LIT if kind == 'lit' else self.litv2.LITv2
    return cls(img_size=size, patch_size=4, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0,
               **kwargs)


def state_dict_of(model) -> collections.OrderedDict:
  """The model's state dict with every float tensor from the recipe (buffers kept)."""
  return collections.OrderedDict(
      (k, torch.from_numpy(recipe.recipe(k, tuple(v.shape), 'lit')) if v.is_floating_point()
       else v) for k, v in model.state_dict().items())


def offset_stats(model, size: int) -> dict:
  """What DTM's offsets do on the golden input: sizes, samples off the map."""
  offsets = []
  def keep(mod, inputs, output):
    del mod, inputs
    offsets.append(output.detach().numpy())  # Returns None: the output stays.
  hooks = [m.register_forward_hook(keep)
           for name, m in model.named_modules() if name.endswith('conv_offset')]
  with torch.no_grad():
    model(torch.from_numpy(recipe.images(size).transpose(0, 3, 1, 2)))
  for hook in hooks:
    hook.remove()
  stats = {}
  for i, off in enumerate(offsets):
    height = off.shape[2] * 2
    ty, tx = np.divmod(np.arange(4), 2)
    y = np.arange(off.shape[2])[None, None, :, None] * 2 + ty[None, :, None, None] + off[:, 0::2]
    x = np.arange(off.shape[3])[None, None, None, :] * 2 + tx[None, :, None, None] + off[:, 1::2]
    outside = (y < 0) | (y > height - 1) | (x < 0) | (x > height - 1)
    stats[f'dtm{i}'] = dict(abs_offset_p50=float(np.median(np.abs(off))),
                            abs_offset_p90=float(np.percentile(np.abs(off), 90)),
                            over_1px=float((np.abs(off) > 1).mean()),
                            samples_off_map=float(outside.mean()))
  return stats


def run(model, size: int, dtype=torch.float32) -> np.ndarray:
  model = model.to(dtype).eval()
  x = torch.from_numpy(recipe.images(size).transpose(0, 3, 1, 2)).to(dtype)
  with torch.no_grad():
    logits = model(x).numpy()
  model.float()
  return logits


def golden(official: Official, name: str, kind: str, kwargs: dict, sizes, write_file=None):
  arrays, stats, keys, int_buffers = {}, {}, {}, {}
  for size in sizes:
    model = official.build(kind, kwargs, size).eval()
    state = state_dict_of(model)
    model.load_state_dict(state, strict=True)
    logits, logits64 = run(model, size), run(model, size, torch.float64)
    arrays[f'logits_{size}'], arrays[f'logits_fp64_{size}'] = logits, logits64
    x = recipe.images(size)
    arrays[f'input_sum_{size}'] = np.float64(x.sum(dtype=np.float64))
    arrays[f'input_first_{size}'] = x.reshape(-1)[:16]
    for key, value in state.items():
      if key.endswith('relative_position_index'):
        stage = key.split('.')[1]
        arrays[f'relative_position_index_{stage}_{size}'] = value.numpy().astype(np.int32)
    stats[size] = dict(spread_fp32_fp64=float(np.abs(logits - logits64).max()),
                       logit_std=float(logits.std()), logit_absmax=float(np.abs(logits).max()),
                       params=sum(p.numel() for p in model.parameters()),
                       **offset_stats(model, size))
    keys[size] = [[k, list(v.shape)] for k, v in state.items() if v.is_floating_point()]
    int_buffers[size] = [k for k, v in state.items() if not v.is_floating_point()]
    if write_file and size == sizes[0]:
      write_file(model, state)
  first = sizes[0]
  record = {'variant': name, 'keys': keys[first], 'int_buffers': int_buffers[first],
            'stats': stats}
  for size in sizes[1:]:  # Keys whose shape follows the build size.
    record[f'shapes_{size}'] = {k: s for (k, s), (_, s0) in zip(keys[size], keys[first])
                                if s != s0}
  with open(HERE / f'keys_{name}.json', 'w') as f:
    json.dump(record, f)
  np.savez_compressed(HERE / f'golden_{name}.npz', **arrays)
  print(name, json.dumps(stats), flush=True)


def op_goldens(official: Official, path):
  """DTM (with its offsets and the deformable conv's own output), HiLo and LIT's attention."""
  arrays = {}
  blocks = official.litv2.__dict__  # `from models.layers import *` brings every module in.
  cases = {
      'dtm': (blocks['DTM']((8, 8), dim=16), (2, 64, 16)),
      'hilo': (blocks['HiLo'](64, num_heads=4, qkv_bias=True, window_size=2, alpha=0.5),
               (2, 64, 64)),
      'hilo_alpha09': (blocks['HiLo'](120, num_heads=10, qkv_bias=True, window_size=2,
                                      alpha=0.9), (2, 64, 120)),
      'relpos': (official.lit.__dict__['RelPosAttention'](32, (4, 4), num_heads=2), (2, 16, 32)),
  }
  for name, (module, shape) in cases.items():
    state = collections.OrderedDict(
        (k, torch.from_numpy(recipe.recipe(f'{name}.{k}', tuple(v.shape), 'lit'))
         if v.is_floating_point() else v) for k, v in module.state_dict().items())
    module.load_state_dict(state)
    module.eval()
    x = np.random.default_rng([recipe.INPUT_SEED, *shape]).standard_normal(shape).astype(
        np.float32)
    captured = {}
    def keep(label):
      def hook(mod, inputs, output):
        del mod, inputs
        captured.setdefault(label, output.detach().numpy())  # The fp32 run's; returns None.
      return hook
    if name == 'dtm':
      module.dconv.conv_offset.register_forward_hook(keep('offsets'))
      module.dconv.register_forward_hook(keep('dconv'))
    with torch.no_grad():
      out = module(torch.from_numpy(x)).numpy()
      out64 = module.double()(torch.from_numpy(x).double()).numpy()
    arrays[f'{name}_input'], arrays[f'{name}_output'] = x, out
    arrays[f'{name}_spread'] = np.abs(out - out64).max()
    for key, value in captured.items():
      arrays[f'{name}_{key}'] = value
    for k, v in state.items():
      arrays[f'{name}.{k}'] = v.numpy()
    print(name, 'fp32 vs fp64', arrays[f'{name}_spread'], flush=True)
  np.savez_compressed(path, **arrays)


def tiny_files(official: Official):
  """Tiny official models saved as their trainers save them, with their outputs."""
  def save_lit(model, state):  # Swin's saver: the yacs config beside the weights.
    config = official.config._C.clone()  # pylint: disable=protected-access
    config.defrost()
    config.MODEL.NAME, config.MODEL.NUM_CLASSES = 'tiny_lit', 10
    config.MODEL.LIT.EMBED_DIM, config.MODEL.LIT.DEPTHS = 8, [1, 1, 2, 1]
    config.MODEL.LIT.NUM_HEADS, config.DATA.IMG_SIZE = [1, 2, 4, 8], 64
    config.MODEL.OFFSET_LR_MULTI = 0.01
    config.freeze()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.save({'model': state, 'optimizer': optimizer.state_dict(),
                'lr_scheduler': {'last_epoch': 300}, 'max_accuracy': 81.5, 'epoch': 299,
                'config': config}, HERE / 'tiny_lit.pth')

  def save_litv2(model, state):  # A bare `state_dict` wrapper.
    del model
    torch.save({'state_dict': state}, HERE / 'tiny_litv2.pth')

  def save_lit_ti(model, state):  # DeiT's saver, the EMA weights only.
    del model
    args = argparse_for_files.Namespace(model='lit_ti', input_size=64, dconv_lr_ratio=0.01,
                                        drop_path=0.1, lr=5e-4, model_ema=True)
    torch.save({'model_ema': state, 'epoch': 299, 'args': args}, HERE / 'tiny_lit_ti.pth')

  savers = {'tiny_lit': save_lit, 'tiny_litv2': save_litv2, 'tiny_lit_ti': save_lit_ti}
  for name, (kind, kwargs, sizes) in TINY.items():
    golden(official, name, kind, kwargs, sizes, savers[name])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--lit', required=True, help='a checkout of ziplab/LIT')
  parser.add_argument('--litv2', required=True, help='a checkout of ziplab/LITv2')
  parser.add_argument('--only', nargs='*')
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count() or 1)
  official = Official(args.lit, args.litv2)
  wanted = lambda n: not args.only or n in args.only
  if wanted('ops'):
    op_goldens(official, HERE / 'golden_ops.npz')
  if wanted('tiny'):
    tiny_files(official)
  for name, (kind, kwargs) in FULL.items():
    if wanted(name):
      golden(official, name, kind, kwargs, SIZES)


if __name__ == '__main__':
  main()
