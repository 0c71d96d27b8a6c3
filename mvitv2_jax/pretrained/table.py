"""Every released checkpoint the package can load, as data: what it is, where it lives, what it expects.

A row names one file of an original repository and the registered variant (plus config
overrides) it converts onto. `name` is the variant for its default weights ('mvitv2_s')
or `variant.tag` for others ('mvitv2_s_16x4.ssv2'), as timm names its weights.

Sources (read 2026-12, snapshots named by their HEAD commit):
- MVIT: facebookresearch/mvit README.md "Results and Pre-trained Models" (dfbdfdf): URLs,
  acc@1; mvit/datasets/imagenet.py and mvit/config/defaults.py: eval transform (resize
  int(224 / 0.875) = 256 bicubic, centre crop 224, ImageNet mean/std).
- PYSF: facebookresearch/SlowFast projects/mvitv2/README.md and MODEL_ZOO.md (287ec00):
  URLs, top-1/top-5, views; configs/{Kinetics,SSv2,ImageNet}/MVIT*.yaml and
  slowfast/config/defaults.py: frames, sampling rate, test crop size, DATA.MEAN/STD
  (default 0.45/0.225; the L configs and ImageNet set ImageNet's), REVERSE_INPUT_CHANNEL
  (SSv2: BGR input); slowfast/datasets/kinetics.py: with 1 spatial crop the short side
  is TRAIN_JITTER_SCALES[0] = 256 then a centre crop, with 3 crops it is the crop size;
  slowfast/datasets/transform.py: bilinear short-side scaling.
Neither host publishes a SHA-256 or a size for any file: both are recorded on first
download (`download.py`) and every later use must match that record.

Detectron2's MViTv2 zoo (Mask R-CNN, Cascade Mask R-CNN: task 'detection', label set
'coco') and ResT/LIT rows go here once those families are registered.
"""

import dataclasses
from typing import Any, Mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.45, 0.45, 0.45)  # PySlowFast's DATA.MEAN / DATA.STD defaults.
KINETICS_STD = (0.225, 0.225, 0.225)

_MVIT = 'https://dl.fbaipublicfiles.com/mvit/mvitv2_models/'
_PYSF = 'https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/mvitv2/pysf_video_models/'
_MVIT_README = 'facebookresearch/mvit README.md'
_PYSF_README = 'facebookresearch/SlowFast projects/mvitv2/README.md'
_PYSF_ZOO = 'facebookresearch/SlowFast MODEL_ZOO.md'


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What a model expects of its input, as its original evaluation prepares it.

  Attributes:
    mean: per-channel mean on [0, 1] RGB values.
    std: per-channel std on [0, 1] RGB values.
    resize: the short side after resizing, before the crop.
    crop: the side of the square crop (the model's input size).
    interpolation: 'bicubic' (PIL's, antialiased) or 'bilinear'.
    channels: 'RGB', or 'BGR' for models trained on channel-reversed input (reversed
      after normalising, as PySlowFast does).
    views: the test views behind the published accuracy.
    sampling_rate: videos: frames between two sampled frames (None: images, or
      'segments' sampling, one frame from each of `frames` equal segments).
  """
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  resize: int
  crop: int
  interpolation: str
  channels: str = 'RGB'
  views: str = '1 centre crop'
  sampling_rate: int | None = None

  @property
  def crop_pct(self) -> float:
    """The crop's share of the resized short side (timm's name)."""
    return self.crop / self.resize


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """One released checkpoint.

  Attributes:
    name: what `load_pretrained` and `--pretrained` take: a variant, or `variant.tag`.
    family: the model family ('mvit').
    task: 'classification' (later 'detection').
    model: the registered variant it converts onto.
    overrides: config fields that differ from the variant's (e.g. num_classes).
    dataset: what the published weights were trained on.
    label_set: the classes of its head ('imagenet-1k', 'kinetics-400', ...).
    num_classes: its head's width.
    resolution: its input side.
    frames: clip length (None for images).
    url: the original host's direct URL, or None where it has none.
    manual: where to get the file by hand when `url` is None.
    filename: the file's name (from the URL, or the name it has where `manual` points).
    top1, top5: the published accuracy (None: none published for this file).
    metric: what the accuracy measures.
    note: anything a user must know (e.g. an accuracy that belongs to another file).
    source: where the row's facts come from.
    preprocessing: the input the model expects.
    sha256, size: known in advance (None for every original file: recorded on first
      download instead).
  """
  name: str
  family: str
  task: str
  model: str
  dataset: str
  label_set: str
  num_classes: int
  resolution: int
  preprocessing: Preprocessing
  source: str
  url: str | None = None
  manual: str | None = None
  filename: str = ''
  frames: int | None = None
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  top1: float | None = None
  top5: float | None = None
  metric: str = ''
  note: str = ''
  sha256: str | None = None
  size: int | None = None

  def __post_init__(self):
    if not self.filename and self.url:
      object.__setattr__(self, 'filename', self.url.rsplit('/', 1)[-1])

  @property
  def model_overrides(self) -> dict[str, Any]:
    """`create_model(self.model, **model_overrides)` builds the model the file fits."""
    return {'num_classes': self.num_classes, **self.overrides}


def _image(name, model, filename, top1, *, top5=None, num_classes=1000, dataset='ImageNet-1K',
           label_set='imagenet-1k', metric='top-1, ImageNet-1K val, 1 crop', note='',
           url_base=_MVIT, source=_MVIT_README, **kwargs) -> Checkpoint:
  return Checkpoint(
      name=name, family='mvit', task='classification', model=model, dataset=dataset,
      label_set=label_set, num_classes=num_classes, resolution=224,
      url=url_base + filename if url_base else None, filename=filename, top1=top1, top5=top5,
      metric=metric if top1 is not None else '', note=note, source=source,
      preprocessing=Preprocessing(IMAGENET_MEAN, IMAGENET_STD, resize=256, crop=224,
                                  interpolation='bicubic'), **kwargs)


def _video(name, model, filename, top1, top5, *, frames, rate, dataset='Kinetics-400',
           label_set='kinetics-400', num_classes=400, resolution=224, mean=KINETICS_MEAN,
           std=KINETICS_STD, crops=1, clips=5, channels='RGB', url_base=_PYSF,
           source=_PYSF_README, note='', **kwargs) -> Checkpoint:
  # PySlowFast's test: 1 spatial crop -> short side 256, centre crop; 3 -> short side = crop.
  resize = 256 if crops == 1 else resolution
  what = 'Kinetics-400 val' if label_set == 'kinetics-400' else 'SSv2 val'
  views = f'{clips} clip{"s" * (clips > 1)} x {crops} crop{"s" * (crops > 1)}'
  return Checkpoint(
      name=name, family='mvit', task='classification', model=model, dataset=dataset,
      label_set=label_set, num_classes=num_classes, resolution=resolution, frames=frames,
      url=url_base + filename if url_base else None, filename=filename, top1=top1, top5=top5,
      metric=f'top-1, {what}, {views}', note=note, source=source,
      preprocessing=Preprocessing(mean, std, resize=resize, crop=resolution,
                                  interpolation='bilinear', channels=channels,
                                  views=views,
                                  sampling_rate=rate if label_set != 'ssv2' else None),
      **kwargs)


_IN21K_NOTE = ('the IN-21K pre-trained file with its 19,168-class head; the published IN-1K '
               'accuracy ({}) is of an IN-1K fine-tuned model that was not released')
_SSV2 = dict(dataset='SSv2 (from Kinetics-400)', label_set='ssv2', num_classes=174, crops=3,
             clips=1, channels='BGR')
_DRIVE = 'https://drive.google.com/file/d/{}/view?usp=sharing'

CHECKPOINTS: tuple[Checkpoint, ...] = (
    _image('mvitv2_t', 'mvitv2_t', 'MViTv2_T_in1k.pyth', 82.3),
    _image('mvitv2_s', 'mvitv2_s', 'MViTv2_S_in1k.pyth', 83.6),
    _image('mvitv2_b', 'mvitv2_b', 'MViTv2_B_in1k.pyth', 84.4),
    _image('mvitv2_l', 'mvitv2_l', 'MViTv2_L_in1k.pyth', 85.3),
    _image('mvitv2_b_cls', 'mvitv2_b_cls', 'MViTv2_B_in21k.pyth', None, num_classes=19168,
           dataset='ImageNet-21K', label_set='imagenet-21k',
           note='the IN-21K pre-trained file with its 19,168-class head; no IN-1K accuracy '
                'published'),
    _image('mvitv2_l_cls', 'mvitv2_l_cls', 'MViTv2_L_in21k.pyth', None, num_classes=19168,
           dataset='ImageNet-21K', label_set='imagenet-21k', note=_IN21K_NOTE.format(87.5)),
    _image('mvitv2_h_cls', 'mvitv2_h_cls', 'MViTv2_H_in21k.pyth', None, num_classes=19168,
           dataset='ImageNet-21K', label_set='imagenet-21k', note=_IN21K_NOTE.format(88.0)),
    _image('mvit_b_16', 'mvit_b_16', 'MVIT_B_16_CONV.pyth', 82.9, top5=96.3, url_base=None,
           manual=_DRIVE.format('1dYYqUB-3DSgBVc9d6o-rW8ojtVsrFLgp'), source=_PYSF_ZOO,
           note='MViTv1-B-16; hosted on Google Drive only'),
    _video('mvitv2_s_16x4', 'mvitv2_s_16x4', 'MViTv2_S_16x4_k400_f302660347.pyth', 81.0, 94.6,
           frames=16, rate=4),
    _video('mvitv2_b_32x3', 'mvitv2_b_32x3', 'MViTv2_B_32x3_k400_f304025456.pyth', 82.9, 95.7,
           frames=32, rate=3),
    _video('mvitv2_l_40x3', 'mvitv2_l_40x3', 'MViTv2_L_40x3_k400_f306903192.pyth', 86.1, 97.0,
           frames=40, rate=3, resolution=312, mean=IMAGENET_MEAN, std=IMAGENET_STD, crops=3,
           dataset='Kinetics-400 (from ImageNet-21K)'),
    _video('mvitv2_s_16x4.ssv2', 'mvitv2_s_16x4', 'MViTv2_S_16x4_ssv2_f308341823.pyth', 68.2,
           91.4, frames=16, rate=4, **_SSV2),
    _video('mvitv2_b_32x3.ssv2', 'mvitv2_b_32x3', 'MViTv2_B_32x3_ssv2_f305803282.pyth', 70.5,
           92.7, frames=32, rate=3, **_SSV2),
    _video('mvitv2_l_40x3.ssv2', 'mvitv2_l_40x3', 'MViTv2_L_40x3_ssv2_f309603968.pyth', 73.3,
           94.1, frames=40, rate=3, resolution=312, mean=IMAGENET_MEAN, std=IMAGENET_STD,
           overrides={'kv_stride': (2, 4, 4)},  # configs/SSv2/MVITv2_L_40x3.yaml.
           **dict(_SSV2, dataset='SSv2 (from ImageNet-21K + Kinetics-400)')),
    _video('mvit_b_16x4', 'mvit_b_16x4', 'MVIT_B_16x4_CONV.pyth', 78.4, 93.5, frames=16, rate=4,
           url_base=None, manual=_DRIVE.format('194gJinVejq6A1FmySNKQ8vAN5-FOY-QL'),
           source=_PYSF_ZOO, note='MViTv1-B 16x4; hosted on Google Drive only'),
)

# Label sets: where their names come from (`labels.py` reads them).
LABEL_SETS = {
    'imagenet-1k': 'TFDS imagenet2012 label list + siscore names',
    'imagenet-21k': 'not shipped by any dependency: printed as "class i"',
    'kinetics-400': 'not shipped by any dependency: printed as "class i"',
    'ssv2': 'not shipped by any dependency (174 templates): printed as "class i"',
}
