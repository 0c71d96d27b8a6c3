"""Writes the ResT / ResTv2 goldens of this directory from the official PyTorch code (torch only).

  python tests/golden/rest/generate.py --official /path/to/wofmanaf/ResT [--only NAME ...]

Not run by the tests: it documents how the files here were made (README.md). The official
checkout (`wofmanaf/ResT`, HEAD b9245d3) is imported unchanged; `official_env` supplies
the timm names it imports.
"""

import argparse
import argparse as argparse_for_files  # The Namespace pickled beside the tiny weights.
import collections
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
TINY_SIZES = (64, 96)
V1 = ('rest_lite', 'rest_small', 'rest_base', 'rest_large')
V2 = ('restv2_tiny', 'restv2_small', 'restv2_base', 'restv2_large')
# Tiny configurations (official constructors' arguments) stored as real checkpoint files.
TINY = {
    'tiny_rest': ('rest', dict(embed_dims=[8, 16, 32, 64], num_heads=[1, 2, 4, 8],
                               mlp_ratios=[4, 4, 4, 4], qkv_bias=True, depths=[1, 1, 2, 1],
                               sr_ratios=[8, 4, 2, 1], apply_transform=True, num_classes=10)),
    'tiny_restv2': ('rest_v2', dict(embed_dims=[8, 16, 32, 64], num_heads=[1, 2, 4, 8],
                                    depths=[1, 1, 2, 1], num_classes=10)),
}


def state_dict_of(model) -> collections.OrderedDict:
  """The model's state dict with every float tensor from the recipe (buffers kept)."""
  out = collections.OrderedDict()
  for key, value in model.state_dict().items():
    if value.is_floating_point():
      value = torch.from_numpy(recipe.recipe(key, tuple(value.shape), 'rest'))
    out[key] = value
  return out


def run(model, size: int, dtype=torch.float32) -> tuple[np.ndarray, list[np.ndarray]]:
  """Logits and the four stage outputs' means over tokens, for the golden input."""
  model = model.to(dtype).eval()
  stages = []
  hooks = [getattr(model, f'stage{i}')[-1].register_forward_hook(
      lambda m, i, o: stages.append(o.detach().mean(1).numpy())) for i in range(1, 5)]
  x = torch.from_numpy(recipe.images(size).transpose(0, 3, 1, 2)).to(dtype)
  with torch.no_grad():
    logits = model(x).numpy()
  for hook in hooks:
    hook.remove()
  model.float()
  return logits, stages


def golden(module, name: str, model, keys_path, npz_path, sizes):
  model.load_state_dict(state_dict_of(model), strict=True)
  arrays, stats = {}, {}
  for size in sizes:
    logits, stages = run(model, size)
    logits64, _ = run(model, size, torch.float64)
    arrays[f'logits_{size}'] = logits
    arrays[f'logits_fp64_{size}'] = logits64
    for i, s in enumerate(stages):
      arrays[f'stage{i + 1}_mean_{size}'] = s
    x = recipe.images(size)
    arrays[f'input_sum_{size}'] = np.float64(x.sum(dtype=np.float64))
    arrays[f'input_first_{size}'] = x.reshape(-1)[:16]
    stats[size] = dict(spread_fp32_fp64=float(np.abs(logits - logits64).max()),
                       logit_std=float(logits.std()), logit_absmax=float(np.abs(logits).max()))
  keys = [[k, list(v.shape)] for k, v in model.state_dict().items() if v.is_floating_point()]
  buffers = [k for k, v in model.state_dict().items() if not v.is_floating_point()]
  with open(keys_path, 'w') as f:
    json.dump({'variant': name, 'keys': keys, 'int_buffers': buffers,
               'params': sum(p.numel() for p in model.parameters()), 'stats': stats}, f)
  np.savez_compressed(npz_path, **arrays)
  print(name, json.dumps(stats), flush=True)
  return stats


def op_goldens(rest, restv2, path):
  """EMSA of both versions alone: with and without the head transform, ResTv2's upsampling."""
  torch.manual_seed(0)
  arrays = {}
  cases = {
      'emsa_v1': (rest.Attention(32, num_heads=2, qkv_bias=True, sr_ratio=4,
                                 apply_transform=True), (8, 8)),
      'emsa_v1_one_head': (rest.Attention(32, num_heads=1, qkv_bias=True, sr_ratio=2,
                                          apply_transform=True), (8, 8)),
      'emsa_v2': (restv2.Attention(32, num_heads=2, sr_ratio=4), (8, 8)),
  }
  for name, (module, (h, w)) in cases.items():
    state = collections.OrderedDict(
        (k, torch.from_numpy(recipe.recipe(f'{name}.{k}', tuple(v.shape), 'rest')))
        for k, v in module.state_dict().items())
    module.load_state_dict(state)
    x = np.random.default_rng([recipe.INPUT_SEED, h, w, 32]).standard_normal(
        (2, h * w, 32)).astype(np.float32)
    with torch.no_grad():
      out = module.eval()(torch.from_numpy(x), h, w).numpy()
      out64 = module.double()(torch.from_numpy(x).double(), h, w).numpy()
    arrays[f'{name}_input'], arrays[f'{name}_output'] = x, out
    arrays[f'{name}_spread'] = np.abs(out - out64).max()
    for k, v in state.items():
      arrays[f'{name}.{k}'] = v.numpy()
    print(name, 'fp32 vs fp64', arrays[f'{name}_spread'])
  np.savez_compressed(path, **arrays)


def tiny_files(modules):
  """Tiny official models saved as the official trainers save them, with their outputs."""
  for name, (module_name, kwargs) in TINY.items():
    module = modules[module_name]
    model = (module.ResT if module_name == 'rest' else module.ResTV2)(**kwargs)
    golden(module, name, model, HERE / f'keys_{name}.json', HERE / f'golden_{name}.npz',
           TINY_SIZES)
    state = model.state_dict()
    args = argparse_for_files.Namespace(model=name, input_size=64, drop_path=0.1, lr=4e-3,
                                        model_ema=name == 'tiny_restv2', sizes=[1, 2],
                                        betas=(0.9, 0.999), output_dir='', resume=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    checkpoint = {'model': state, 'optimizer': optimizer.state_dict(), 'epoch': 299,
                  'scaler': {'scale': 65536.0, 'growth_factor': 2.0}, 'args': args}
    if name == 'tiny_restv2':  # ResTv2's saver with EMA on: both state dicts.
      checkpoint['model_ema'] = state
    torch.save(checkpoint, HERE / f'{name}.pth')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--official', required=True, help='a checkout of wofmanaf/ResT')
  parser.add_argument('--only', nargs='*')
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count() or 1)
  rest = official_env.import_official(args.official, 'models.rest')
  restv2 = official_env.import_official(args.official, 'models.rest_v2')
  modules = {'rest': rest, 'rest_v2': restv2}
  wanted = lambda n: not args.only or n in args.only
  if wanted('ops'):
    op_goldens(rest, restv2, HERE / 'golden_ops.npz')
  if wanted('tiny'):
    tiny_files(modules)
  for name in V1 + V2:
    if wanted(name):
      module = rest if name in V1 else restv2
      golden(module, name, getattr(module, name)(), HERE / f'keys_{name}.json',
             HERE / f'golden_{name}.npz', SIZES)


if __name__ == '__main__':
  main()
