"""Tests for mvitv2_jax.checkpoint.numpy_pickle: detectron2-style .pkl files and their rules."""

import pickle
import re

import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax.checkpoint import CheckpointFormatError
from tests.helpers.checkpoint_files import assert_bitwise_equal
from tests.helpers.pickle_ops import (BUILD, MARK, NEWFALSE, PROTO2, STOP, TUPLE, call, dict_of,
                                      dtype_state, global_ref, int_tuple, integer, numpy_array,
                                      numpy_dtype, numpy_scalar, raw_bytes, string, text)


def _model():
  """The weights of a small detectron2 model, and what each must read back as."""
  rng = np.random.default_rng(0)
  model = {
      'backbone.stem.conv1.weight': rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
      'backbone.stem.conv1.norm.running_mean': rng.standard_normal(4),  # float64
      'roi_heads.box_predictor.cls_score.bias': np.arange(-3, 3, dtype=np.int64),
      'backbone.stem.conv1.norm.num_batches_tracked': np.array(1234, np.int64),  # 0-d
      'pixel_mean': np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1),
      'fortran': np.asfortranarray(rng.standard_normal((3, 5)).astype(np.float32)),
      'transposed': np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(1, 0, 2),
      'big_endian': np.arange(5, dtype='>i4'),
      'half': np.array([0.5, -65504.0], np.float16),
      'mask': np.array([True, False]),
      'empty': np.zeros((0, 3), np.float32),
      'scalar': np.int64(7),  # A NumPy scalar: read as a 0-d array.
  }
  expected = {k: np.array(v, order='C').astype(np.asarray(v).dtype.newbyteorder('='))
              for k, v in model.items()}
  return model, expected


def _assert_model(state, expected):
  assert list(state) == list(expected)
  for key, want in expected.items():
    assert_bitwise_equal(state[key], want, key)
    assert state[key].flags.c_contiguous and state[key].flags.writeable, key


@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
def test_detectron2_pickles_read_back_equal(tmp_path, protocol):
  model, expected = _model()
  path = tmp_path / 'model_final.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'model': model, '__author__': 'Detectron2 Model Zoo',
                 'matching_heuristics': True}, f, protocol=protocol)
  obj = checkpoint.read(path)
  assert obj['__author__'] == 'Detectron2 Model Zoo' and obj['matching_heuristics'] is True
  _assert_model(obj['model'], expected)
  _assert_model(checkpoint.read_state_dict(path), expected)


def _python2_pickle() -> tuple[bytes, dict]:
  """A detectron2 pickle as Python 2 wrote it (8-bit str everywhere), and its weights."""
  weights = {
      b'conv.weight': np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5,
      b'bn.running_var': np.linspace(0.5, 2.0, 300),  # 2,400 bytes: BINSTRING.
      b'fc.bias': np.array([-(2**40), 3, 0], np.int64),
      b'caf\xe9.weight': np.array([[1.0, 2.0]], np.float32),  # A latin-1 name.
  }
  items = [(string(k), numpy_array(v.shape, v.dtype.str[1:], v.tobytes()))
           for k, v in weights.items()]
  items.append((string(b'bn.num_batches_tracked'),
                numpy_scalar('i8', np.int64(1234).tobytes())))
  data = PROTO2 + dict_of([
      (string(b'model'), dict_of(items)),
      (string(b'__author__'), string(b'Detectron \xa9 FAIR')),
      (string(b'matching_heuristics'), b'\x88'),
  ]) + STOP
  expected = {k.decode('latin-1'): v for k, v in weights.items()}
  expected['bn.num_batches_tracked'] = np.array(1234, np.int64)
  return data, expected


def test_python2_pickle_decodes_str_as_latin1(tmp_path):
  data, expected = _python2_pickle()
  path = tmp_path / 'R-50.pkl'
  path.write_bytes(data)
  reference = pickle.loads(data, encoding='latin1')  # What detectron2 itself reads.
  obj = checkpoint.read(path)
  assert obj['__author__'] == reference['__author__'] == 'Detectron \xa9 FAIR'
  assert list(obj['model']) == list(reference['model']) == list(expected)
  for key, want in expected.items():
    assert_bitwise_equal(np.asarray(reference['model'][key]), want, key)
  _assert_model(checkpoint.read_state_dict(path), expected)


def test_numpy_2_module_names(tmp_path):
  weight = numpy_array((2,), 'f8', np.array([1.5, -2.0]).tobytes(), core='numpy._core')
  scalar = numpy_scalar('i8', np.int64(3).tobytes(), core='numpy._core')
  path = tmp_path / 'numpy2.pkl'
  path.write_bytes(PROTO2 + dict_of([(text('w'), weight), (text('n'), scalar)]) + STOP)
  state = checkpoint.read_state_dict(path)
  assert state['w'].tolist() == [1.5, -2.0] and state['n'].shape == () and state['n'] == 3


def test_arrays_are_charged_to_the_budget(tmp_path):
  path = tmp_path / 'big.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'w': np.zeros(1 << 20, np.float32)}, f, protocol=4)  # 4 MiB of data.
  assert checkpoint.read_state_dict(path)['w'].nbytes == 4 << 20
  with pytest.raises(CheckpointFormatError, match=r'numpy array of shape \(1048576,\).*\(the cap'):
    checkpoint.read(path, max_bytes=(4 << 20) + (1 << 20))


def test_code_in_a_pickle_never_runs(tmp_path):
  marker = tmp_path / 'pwned'

  class Exploit:

    def __reduce__(self):
      return (open, (str(marker), 'w'))

  path = tmp_path / 'evil.pkl'
  path.write_bytes(pickle.dumps({'model': {'w': np.ones(2), 'x': Exploit()}}, protocol=4))
  with pytest.raises(CheckpointFormatError, match=f'forbidden pickle global {open.__module__}.open'):
    checkpoint.read(path)
  assert not marker.exists()


def _pickle_of(weight: bytes) -> bytes:
  return PROTO2 + dict_of([(text('w'), weight)]) + STOP


_F4 = np.float32(1.0).tobytes()
_NDARRAY = global_ref('numpy', 'ndarray')
_EMPTY = call('numpy.core.multiarray', '_reconstruct', _NDARRAY, int_tuple((0,)), string(b'b'))
_STATE = MARK + integer(1) + int_tuple((1,)) + numpy_dtype('f4') + NEWFALSE + string(_F4) + TUPLE


def _frombuffer(*args: bytes) -> bytes:
  return call('numpy.core.numeric', '_frombuffer', raw_bytes(_F4), numpy_dtype('f4'),
              int_tuple((1,)), *args)


@pytest.mark.parametrize('weight,pattern', [
    (numpy_array((1,), 'U5', bytes(20)), "unsupported numpy dtype 'U5'"),
    (numpy_array((1,), 'f8', bytes(8), order='|'), r"numpy.dtype\('f8'\) of 8 bytes without"),
    (call('numpy', 'dtype', string(b'f4'), integer(0), integer(1)),
     r"pickle holds numpy.dtype\('f4'\), which is not data"),
    (numpy_dtype('f4', state=MARK + integer(2) + TUPLE),
     r"numpy.dtype\('f4'\) with state \(2,\), not that of a plain number type"),
    (numpy_dtype('f4') + dtype_state() + BUILD, r"sets the state of numpy.dtype\('f4'\) twice"),
    (_EMPTY, r'numpy array without its data \(no BUILD\)'),
    (_EMPTY + _STATE + BUILD + _STATE + BUILD, r'sets the state of numpy.ndarray\(1,\) twice'),
    (call('numpy.core.multiarray', '_reconstruct', _NDARRAY, int_tuple((3,)), string(b'b')),
     '_reconstruct called with'),
    (_frombuffer(text('X')), "_frombuffer with order 'X'"),
    (_frombuffer(text('K'), int_tuple((1,))), r"_frombuffer with order 'K', axes \(1,\)"),
    (call('numpy.core.multiarray', 'scalar', numpy_dtype('i8'), string(bytes(4))),
     r'shape \(\) and dtype i8 takes 8 bytes; its data has 4'),
    (call('_codecs', 'encode', text('abc'), text('utf-8')), 'not latin-1 text'),
    (call('__builtin__', 'bytes', text('abc')), 'pickle calls __builtin__.bytes, which is not'),
    (call('numpy', 'ndarray', int_tuple((2,))), 'pickle calls numpy.ndarray, which is not'),
    (_NDARRAY, 'pickle holds numpy.ndarray, which is not data'),
    (call('numpy', 'frombuffer', raw_bytes(_F4)), 'forbidden pickle global numpy.frombuffer'),
], ids=['unicode_dtype', 'no_byte_order', 'bare_dtype', 'dtype_state', 'dtype_twice',
        'no_build', 'build_twice', 'reconstruct_shape', 'frombuffer_order', 'frombuffer_axes',
        'scalar_size', 'encode_utf8', 'bytes_of_text', 'ndarray_call', 'ndarray_class',
        'numpy_frombuffer'])
def test_rules(tmp_path, weight, pattern):
  path = tmp_path / 'rule.pkl'
  path.write_bytes(_pickle_of(weight))
  with pytest.raises(CheckpointFormatError) as info:
    checkpoint.read(path)
  message = str(info.value)
  assert message.startswith(f'{path}: ') and '\n' not in message
  assert re.search(pattern, message), message
