"""Model families and their named variants: what the trainer and the converter know of each.

A family is one model definition (its config dataclass and Flax module) with variants as
data, plus the facts shared layers need: the shape of an input, its analytic FLOPs, the
size rule of its build size, which params are position tables (weight decay), which are
stacked by scanned blocks (sharding, decay), and how its PyTorch checkpoints map onto its
params (`KeyTable`, read by `mvitv2_jax.convert`). Families register themselves when
`mvitv2_jax.models` is imported.
"""

import dataclasses
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax.numpy as jnp

Params = dict[str, Any]
# (value in Flax layout, the model's shape, the model's config) -> the value resized, or None.
Resizer = Callable[[Any, tuple[int, ...], Any], Any]
Initializer = Callable[..., Any]  # (key, shape, dtype) -> array.


@dataclasses.dataclass(frozen=True)
class KeyTable:
  """How a family's PyTorch state dicts map onto its Flax params, for `mvitv2_jax.convert`.

  Keys are rewritten by regular expressions into dotted Flax paths (`blocks.3.attn.qkv.weight`
  -> `blocks_3.attn.qkv.kernel`) and back; tensors whose key ends in `.weight` change from
  PyTorch's layout to Flax's by rank (conv OI[D]HW -> [D]HWIO, linear (out, in) -> (in, out)).

  Attributes:
    to_flax: (pattern, replacement) rules applied in order to a source key.
    to_torch: the inverse rules, applied in order to a dotted Flax path.
    head: Flax paths of the classifier -> the initializer of a fresh one (`drop_head`).
    resize: leaf name -> resizer for tensors whose shape follows the build size.
    normalize: (state_dict, config) -> the state dict in the rules' source naming (another
      layout of the same weights, e.g. timm's).
    inflate: (state_dict, model, seed) -> state dict: an image checkpoint for a video model.
    guesses: state_dict -> (label, config) candidates the checkpoint may be, cheap filters
      applied: the converter names the first whose tensors fit when a file does not.
    collections: (pattern, collection) rules: a source key matching one fills that Flax
      variable collection instead of 'params' (BatchNorm's running statistics ->
      'batch_stats'); its path comes from the same `to_flax` rules.
    buffers: (pattern, check) rules for tensors the model computes instead of loading
      (`num_batches_tracked`, rel-pos index buffers): a matching key is checked and dropped;
      `check(key, value, config)` returns None, or why the tensor is not what the model
      computes (the conversion then fails naming it). Buffers are never required.
    wrapper_keys: keys under which the family's training checkpoints keep the state dict,
      by preference (None: the reader's defaults).
  """
  to_flax: tuple[tuple[str, str], ...]
  to_torch: tuple[tuple[str, str], ...]
  head: Mapping[tuple[str, ...], Initializer] = dataclasses.field(default_factory=dict)
  resize: Mapping[str, Resizer] = dataclasses.field(default_factory=dict)
  normalize: Callable[[dict, Any], dict] = lambda state_dict, cfg: state_dict
  inflate: Callable[..., dict] | None = None
  guesses: Callable[[dict], Iterable[tuple[str, Any]]] = lambda state_dict: ()
  collections: tuple[tuple[str, str], ...] = ()
  buffers: tuple[tuple[str, Callable[[str, Any, Any], str | None]], ...] = ()
  wrapper_keys: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family.

  Attributes:
    name: e.g. 'mvit'.
    config_class: the frozen dataclass of the architecture; a variant is a dict of its fields.
    module_class: the Flax module, built as `module_class(config)`.
    variants: variant name -> config fields.
    task: the task its models are trained for (`mvitv2_jax.tasks`).
    input_shape: config -> the shape of one input example, e.g. (224, 224, 3).
    flops: (config, image_size or None) -> analytic forward FLOPs of one example by part
      ('attention': the attention matmuls, 'other': every other matmul and conv).
    image_size_rule: config -> (what build sizes must be a multiple of, why).
    describe: config -> a short description for error messages.
    position_params: leaf names of position tables and tokens, exempt from weight decay
      with `optim.no_decay_rel_pos_cls`.
    stacked: param path -> whether the leaf stacks the blocks of a scanned run on axis 0.
    unscanned: config -> the same model with one param entry per block.
    stack: (params with one entry per block, config) -> params in the config's layout.
    unstack: params in any layout -> one entry per block.
    checkpoint: the conversion's key table.
    state_collections: variable collections besides 'params' that the module updates
      while training (BatchNorm's 'batch_stats'); the train state carries them.
    lr_multipliers: (pattern, multiplier) rules: a param whose '/'-joined path matches the
      pattern (`re.search`, first rule that matches) trains at that multiple of the peak
      learning rate (the original's param groups; `train.optim`).
  """
  name: str
  config_class: type
  module_class: type
  variants: Mapping[str, Mapping[str, Any]]
  checkpoint: KeyTable
  input_shape: Callable[[Any], tuple[int, ...]]
  flops: Callable[[Any, int | None], dict[str, float]]
  image_size_rule: Callable[[Any], tuple[int, str]]
  describe: Callable[[Any], str] = repr
  task: str = 'classification'
  position_params: tuple[str, ...] = ()
  stacked: Callable[[tuple[Any, ...]], bool] = lambda path: False
  unscanned: Callable[[Any], Any] = lambda cfg: cfg
  stack: Callable[[Params, Any], Params] = lambda params, cfg: params
  unstack: Callable[[Params], Params] = lambda params: params
  state_collections: tuple[str, ...] = ()
  lr_multipliers: tuple[tuple[str, float], ...] = ()


_FAMILIES: dict[str, Family] = {}
_BY_VARIANT: dict[str, Family] = {}


def register(family: Family) -> Family:
  """Adds `family` and its variants to the registry (each variant name once)."""
  taken = sorted(set(family.variants) & set(_BY_VARIANT))
  if taken or family.name in _FAMILIES:
    raise ValueError(f'Family {family.name!r}: names already registered: {taken or family.name}.')
  _FAMILIES[family.name] = family
  _BY_VARIANT.update(dict.fromkeys(family.variants, family))
  return family


def model_names() -> list[str]:
  """Every registered variant, sorted."""
  return sorted(_BY_VARIANT)


def families() -> list[Family]:
  return list(_FAMILIES.values())


def family_of(model: str | nn.Module | Any) -> Family:
  """The family of a variant name, a built module or a config."""
  if isinstance(model, str):
    if model not in _BY_VARIANT:
      raise ValueError(f'Unknown model {model!r}. Known models: {", ".join(model_names())}.')
    return _BY_VARIANT[model]
  cfg = getattr(model, 'cfg', model)
  for family in _FAMILIES.values():
    if isinstance(cfg, family.config_class):
      return family
  raise ValueError(f'{type(cfg).__name__} is the config of no registered family.')


def _from_json(value: Any) -> Any:
  """Config values as a dataclass holds them: lists (e.g. from a JSON config) as tuples."""
  return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def variant_config(name: str, **overrides) -> Any:
  """The config of a named variant with `overrides` (any config field) applied."""
  family = family_of(name)
  fields = {f.name for f in dataclasses.fields(family.config_class)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'Unknown model options {unknown}. Options: {", ".join(sorted(fields))}.')
  values = {k: _from_json(v) for k, v in {**family.variants[name], **overrides}.items()}
  for key in ('dtype', 'param_dtype'):
    if isinstance(values.get(key), str):
      values[key] = jnp.dtype(values[key])
  return family.config_class(**values)


def create_model(name: str, num_classes: int | None = None, *, pretrained: bool = False,
                 **overrides) -> nn.Module:
  """Builds a named variant of any family.

  Args:
    name: one of `model_names()`, e.g. 'mvitv2_s'; with `pretrained`, a released
      checkpoint's name (`mvitv2_jax.pretrained.names()`, e.g. 'mvitv2_s_16x4.ssv2').
    num_classes: classifier width (default: the variant's, or the checkpoint's; another
      width with `pretrained` starts a fresh head).
    pretrained: download (once) and convert the released weights, and return the model
      bound to them: `model(images)`, or `module, variables = model.unbind()`.
    **overrides: any field of the family's config, e.g. `image_size=384`,
      `dtype='bfloat16'`, `drop_path_rate=0.1`.

  Returns:
    The Flax module (bound to its params with `pretrained`).
  """
  if pretrained:
    from mvitv2_jax import pretrained as weights  # pylint: disable=g-import-not-at-top (cycle)
    return weights.create_model(name, num_classes=num_classes, **overrides)
  if num_classes is not None:
    overrides['num_classes'] = num_classes
  return family_of(name).module_class(variant_config(name, **overrides))


def input_shape(model: nn.Module) -> tuple[int, ...]:
  """The shape of one input example of a built model, e.g. (224, 224, 3)."""
  return family_of(model).input_shape(model.cfg)
