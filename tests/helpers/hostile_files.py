"""Hostile checkpoint and image files, written by the tests at run time (nothing committed).

Every file is at most about 1 MB on disk; each one once crashed the reader, hung it, or
made it allocate gigabytes. `CHECKPOINTS` and `IMAGES` map a case name to a writer
`fn(directory) -> path`. Pickles and zips are assembled by hand so that each file says
exactly what it claims, including sizes that lie.
"""

import json
import os
import pickle
import struct
import zlib

import numpy as np

from tests.helpers.pickle_ops import (APPEND, BINPERSID, BUILD, EMPTY_DICT, EMPTY_LIST,
                                      EMPTY_TUPLE, MARK, NEWFALSE, NEWOBJ, PROTO2, REDUCE,
                                      SETITEM, SETITEMS, STOP, TUPLE, call, dict_of, global_ref,
                                      int_tuple, integer, numpy_array, text)

# --- torch's pickles, assembled by hand (opcodes: tests/helpers/pickle_ops.py) ---------


def storage_ref(key: str = '0', numel: int = 1, storage_type: str = 'FloatStorage') -> bytes:
  """A persistent id as torch writes it for a storage."""
  return (MARK + text('storage') + global_ref('torch', storage_type) + text(key) + text('cpu')
          + integer(numel) + TUPLE + BINPERSID)


def tensor(key: str = '0', numel: int = 1, offset: int = 0, size=(1,), stride=(1,)) -> bytes:
  """torch._utils._rebuild_tensor_v2 over a persistent float32 storage."""
  return (global_ref('torch._utils', '_rebuild_tensor_v2') + MARK + storage_ref(key, numel)
          + integer(offset) + int_tuple(size) + int_tuple(stride) + NEWFALSE
          + global_ref('collections', 'OrderedDict') + EMPTY_TUPLE + REDUCE + TUPLE + REDUCE)


def laughs(depth: int) -> bytes:
  """A tuple that doubles at each of `depth` levels through the memo: 2**depth leaves."""
  out = text('lol') + b'q\x00'
  for _ in range(depth):
    out += b'0' + b'h\x00' * 2 + b'\x86' + b'q\x00'  # POP, BINGET 0 twice, TUPLE2, BINPUT 0.
  return out


# --- Zip containers, written record by record -----------------------------------------

STORED, DEFLATED = 0, 8


class Record:
  """One zip entry: `payload` as it sits in the file, `size` and `crc` as the zip declares."""

  def __init__(self, name, payload, *, method=STORED, size=None, crc=None):
    self.name, self.payload, self.method = name.encode(), payload, method
    self.size = len(payload) if size is None else size
    self.crc = zlib.crc32(payload) if crc is None else crc


def write_zip(path, records) -> str:
  """A zip archive of `records`, their sizes and CRCs taken as given."""
  local, central = bytearray(), bytearray()
  for r in records:
    fields = struct.pack('<HHHHHIIIHH', 20, 0, r.method, 0, 0x21, r.crc, len(r.payload),
                         r.size, len(r.name), 0)
    central += (b'PK\x01\x02' + struct.pack('<H', 20) + fields
                + struct.pack('<HHHII', 0, 0, 0, 0, len(local)) + r.name)
    local += b'PK\x03\x04' + fields + r.name + r.payload
  end = struct.pack('<4sHHHHIIH', b'PK\x05\x06', 0, 0, len(records), len(records),
                    len(central), len(local), 0)
  with open(path, 'wb') as f:
    f.write(bytes(local) + bytes(central) + end)
  return str(path)


def torch_zip(path, data_pkl: bytes, storages=None, extra=()) -> str:
  """torch's layout: archive/data.pkl, archive/byteorder, archive/data/<key> (stored)."""
  records = [Record('archive/data.pkl', data_pkl), Record('archive/byteorder', b'little')]
  records += [Record(f'archive/data/{key}', data) for key, data in (storages or {}).items()]
  return write_zip(path, records + list(extra))


def deflate_repeated(parts) -> tuple[bytes, int, int]:
  """Raw deflate of the concatenation of chunk * count for (chunk, count) in `parts`.

  Each chunk is compressed once and its stream segment repeated: a full flush makes a
  segment independent of what precedes it. Returns (stream, inflated size, crc32).
  """
  stream, size, crc = bytearray(), 0, 0
  for chunk, count in parts:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream += segment * count
    size += len(chunk) * count
    for _ in range(count):
      crc = zlib.crc32(chunk, crc)
  stream += zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # An empty final block.
  return bytes(stream), size, crc


def deflated_record(name, parts, *, declared=None) -> Record:
  stream, size, crc = deflate_repeated(parts)
  return Record(name, stream, method=DEFLATED, size=size if declared is None else declared,
                crc=crc)


_MIB = 1 << 20
_GIB_OF = lambda byte: [(byte * _MIB, 1024)]  # pylint: disable=unnecessary-lambda-assignment


def _one_float() -> dict:
  return {'0': struct.pack('<f', 1.0)}


# --- Checkpoint cases -------------------------------------------------------------------


def nested_tuple_key(directory, depth=200_000) -> str:
  """{((((...)))): tensor}: a dict key nested `depth` tuples deep."""
  pkl = PROTO2 + EMPTY_DICT + MARK + MARK * depth + EMPTY_TUPLE + TUPLE * depth + tensor()
  return torch_zip(os.path.join(directory, f'nested_{depth}.pth'),
                   pkl + SETITEMS + STOP, _one_float())


def byteorder_bomb(directory) -> str:
  """A 1 GiB byteorder record that deflates to 1 MB."""
  return write_zip(os.path.join(directory, 'byteorder_bomb.pth'), [
      Record('archive/data.pkl', PROTO2 + EMPTY_DICT + STOP),
      deflated_record('archive/byteorder', _GIB_OF(b'l'))])


def stride_zero(directory, numel=250_000_000) -> str:
  """A tensor of `numel` elements over a one-element storage (stride 0)."""
  pkl = PROTO2 + EMPTY_DICT + text('w') + tensor(size=(numel,), stride=(0,)) + SETITEM + STOP
  return torch_zip(os.path.join(directory, f'stride0_{numel}.pth'), pkl, _one_float())


def memo_index(directory, index=2**26) -> str:
  """A pickle that memoises its first object at index `index` (LONG_BINPUT)."""
  path = os.path.join(directory, f'memo_{index}.pth')
  with open(path, 'wb') as f:
    f.write(PROTO2 + b'N' + b'r' + struct.pack('<I', index) + STOP)
  return path


def laughs_key(directory, depth=24) -> str:
  """{billion laughs tuple: tensor}: a key whose repr is 2**depth leaves long."""
  pkl = PROTO2 + EMPTY_DICT + laughs(depth) + tensor() + SETITEM + STOP
  return torch_zip(os.path.join(directory, 'laughs_key.pth'), pkl, _one_float())


def laughs_persistent_id(directory, depth=25) -> str:
  """A persistent id that is a billion laughs tuple."""
  pkl = PROTO2 + EMPTY_DICT + text('w') + laughs(depth) + BINPERSID + SETITEM + STOP
  return torch_zip(os.path.join(directory, 'laughs_pid.pth'), pkl, _one_float())


def shared_storage(directory, count=250, mib=4, deflated=True) -> str:
  """`count` tensors viewing all of one `mib` MiB storage (deflated: to a few KB)."""
  numel = mib * _MIB // 4
  items = b''.join(text(f'w{i}') + tensor(numel=numel, size=(numel,)) for i in range(count))
  pkl = PROTO2 + EMPTY_DICT + MARK + items + SETITEMS + STOP
  storage = (deflated_record('archive/data/0', [(bytes(_MIB), mib)]) if deflated else
             Record('archive/data/0', bytes(mib * _MIB)))
  return write_zip(os.path.join(directory, 'shared_storage.pth'), [
      Record('archive/data.pkl', pkl), Record('archive/byteorder', b'little'), storage])


def storage_bomb(directory) -> str:
  """A tensor over a 1 GiB storage record that deflates to 1 MB."""
  numel = 1 << 28
  pkl = PROTO2 + EMPTY_DICT + text('w') + tensor(numel=numel, size=(numel,)) + SETITEM + STOP
  return write_zip(os.path.join(directory, 'storage_bomb.pth'), [
      Record('archive/data.pkl', pkl), Record('archive/byteorder', b'little'),
      deflated_record('archive/data/0', _GIB_OF(b'\x00'))])


def storage_bomb_understated(directory) -> str:
  """A storage record declared as 4 bytes that inflates to 1 GiB."""
  pkl = PROTO2 + EMPTY_DICT + text('w') + tensor() + SETITEM + STOP
  return write_zip(os.path.join(directory, 'storage_bomb_small.pth'), [
      Record('archive/data.pkl', pkl), Record('archive/byteorder', b'little'),
      deflated_record('archive/data/0', _GIB_OF(b'\x00'), declared=4)])


def pickle_bomb(directory) -> str:
  """data.pkl holding one 1 GiB string, deflated to 1 MB."""
  length = 1 << 30
  return write_zip(os.path.join(directory, 'pickle_bomb.pth'), [
      deflated_record('archive/data.pkl', [(PROTO2 + b'X' + struct.pack('<I', length), 1),
                                           (b'a' * _MIB, 1024), (STOP, 1)]),
      Record('archive/byteorder', b'little')])


BUILD_MARKER = 'written_by_a_checkpoint'


def build_on_rebuild(directory) -> str:
  """BUILD {BUILD_MARKER: 1} on the allowlisted _rebuild_tensor_v2."""
  pkl = (PROTO2 + global_ref('torch._utils', '_rebuild_tensor_v2') + EMPTY_DICT
         + text(BUILD_MARKER) + integer(1) + SETITEM + BUILD + b'0' + EMPTY_DICT + STOP)
  return torch_zip(os.path.join(directory, 'build.pth'), pkl)


# --- What training checkpoints keep beside the weights -----------------------------------
# {'model': {'w': tensor}, 'args': <object>}: the reader accepts an argparse.Namespace or a
# yacs CfgNode there as an inert record; these put something else in that position.


def _beside_weights(directory, name: str, obj: bytes) -> str:
  pkl = PROTO2 + dict_of([(text('model'), dict_of([(text('w'), tensor())])),
                          (text('args'), obj)]) + STOP
  return torch_zip(os.path.join(directory, name), pkl, _one_float())


def _namespace(state: bytes, cls=('argparse', 'Namespace'), args: bytes = EMPTY_TUPLE) -> bytes:
  """cls.__new__(cls, *args) then BUILD with `state`, as protocol 2 pickles a Namespace."""
  return global_ref(*cls) + args + NEWOBJ + state + BUILD


HOSTILE_RECORDS = {
    # os.system('echo pwned') where the run's options sit.
    'args_os_system': lambda d: _beside_weights(d, 'args_os_system.pth',
                                                call('os', 'system', text('echo pwned'))),
    # A Namespace whose options hold a code-running object.
    'namespace_state_eval': lambda d: _beside_weights(d, 'namespace_state_eval.pth', _namespace(
        dict_of([(text('lr'), call('builtins', 'eval', text('__import__("os")')))]))),
    # Another argparse class, created as a Namespace would be.
    'newobj_argument_parser': lambda d: _beside_weights(d, 'newobj_parser.pth', _namespace(
        EMPTY_DICT, cls=('argparse', 'ArgumentParser'))),
    # Namespace(**...) called rather than created: not how pickle writes one.
    'namespace_called': lambda d: _beside_weights(d, 'namespace_called.pth', call(
        'argparse', 'Namespace', text('x'))),
    # A CfgNode created with arguments.
    'cfgnode_newobj_args': lambda d: _beside_weights(d, 'cfgnode_args.pth', _namespace(
        EMPTY_DICT, cls=('yacs.config', 'CfgNode'), args=MARK + text('x') + TUPLE)),
    # set() of a container (yacs pickles a set of key names in a CfgNode's state).
    'set_of_dict': lambda d: _beside_weights(d, 'set_of_dict.pth', call(
        'builtins', 'set', EMPTY_LIST + EMPTY_DICT + APPEND)),
}


def _safetensors(path, header_json: str, data: bytes) -> str:
  raw = header_json.encode()
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(raw)) + raw + data)
  return str(path)


def _entry(name, begin, end, shape=None):
  shape = [(end - begin) // 4] if shape is None else shape
  info = {'dtype': 'F32', 'shape': shape, 'data_offsets': [begin, end]}
  return f'"{name}": {json.dumps(info)}'


def safetensors_duplicate_key(directory) -> str:
  header = '{' + _entry('w', 0, 8) + ', ' + _entry('w', 8, 16) + '}'
  return _safetensors(os.path.join(directory, 'duplicate.safetensors'), header, bytes(16))


def safetensors_overlap(directory) -> str:
  header = '{' + _entry('a', 0, 8) + ', ' + _entry('b', 4, 12) + '}'
  return _safetensors(os.path.join(directory, 'overlap.safetensors'), header, bytes(12))


def safetensors_gap(directory) -> str:
  header = '{' + _entry('a', 0, 4) + ', ' + _entry('b', 8, 12) + '}'
  return _safetensors(os.path.join(directory, 'gap.safetensors'), header, bytes(12))


def safetensors_metadata_list(directory) -> str:
  header = '{"__metadata__": [1, 2], ' + _entry('w', 0, 4) + '}'
  return _safetensors(os.path.join(directory, 'metadata_list.safetensors'), header, bytes(4))


def safetensors_metadata_value(directory) -> str:
  header = '{"__metadata__": {"format": {"pt": 1}}, ' + _entry('w', 0, 4) + '}'
  return _safetensors(os.path.join(directory, 'metadata_value.safetensors'), header, bytes(4))


def safetensors_deep_json(directory, depth=100_000) -> str:
  header = '{"w": ' + '[' * depth + ']' * depth + '}'
  return _safetensors(os.path.join(directory, 'deep.safetensors'), header, b'')


# --- Pickles of NumPy arrays, as detectron2's .pkl files are --------------------------


def _d2_pickle(directory, name: str, weight: bytes) -> str:
  """{'model': {'w': weight}, '__author__': ...}, `weight` already pickled."""
  model = dict_of([(text('w'), weight)])
  pkl = PROTO2 + dict_of([(text('model'), model), (text('__author__'), text('hostile'))]) + STOP
  path = os.path.join(directory, name)
  with open(path, 'wb') as f:
    f.write(pkl)
  return path


def pkl_code(directory, module: str, name: str, argument: str) -> str:
  """A weight that is module.name(argument): os.system, eval, numpy.load."""
  return _d2_pickle(directory, f'{module}_{name}.pkl', call(module, name, text(argument)))


def pkl_array(directory, name: str, shape, code: str = 'f4', data: bytes = bytes(4),
              **kwargs) -> str:
  """A weight that is a NumPy array as NumPy pickles it, declaring what it likes."""
  return _d2_pickle(directory, name, numpy_array(shape, code, data, **kwargs))


def pkl_truncated(directory) -> str:
  """A detectron2-style pickle written by pickle itself, cut in the middle of its data."""
  data = pickle.dumps({'model': {'w': np.arange(1000, dtype=np.float32)}}, protocol=2)
  path = os.path.join(directory, 'truncated.pkl')
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  return path


def pkl_nested(directory, depth: int) -> str:
  """A weight that is a list nested `depth` deep."""
  return _d2_pickle(directory, f'nested_{depth}.pkl', EMPTY_LIST * depth + APPEND * (depth - 1))


def fifo(directory) -> str:
  path = os.path.join(directory, 'fifo.pth')
  os.mkfifo(path)
  return path


def plain_directory(directory) -> str:
  path = os.path.join(directory, 'plain_dir')
  os.makedirs(path)
  with open(os.path.join(path, 'notes.txt'), 'w') as f:
    f.write('not a checkpoint\n')
  return path


def empty_directory(directory) -> str:
  """A run's `best/<step>` as orbax creates it before anything is written."""
  path = os.path.join(directory, 'empty_orbax', 'default')
  os.makedirs(path)
  return os.path.dirname(path)


CHECKPOINTS = {
    'nested_tuple_200k': nested_tuple_key,
    'nested_tuple_75k': lambda d: nested_tuple_key(d, 75_000),
    'byteorder_bomb': byteorder_bomb,
    'stride0_250M': stride_zero,
    'stride0_1e10': lambda d: stride_zero(d, 10**10),
    'memo_2_26': memo_index,
    'memo_2_31': lambda d: memo_index(d, 2**31),
    'laughs_key': laughs_key,
    'laughs_persistent_id': laughs_persistent_id,
    'shared_storage_250': shared_storage,
    'storage_bomb': storage_bomb,
    'storage_bomb_understated': storage_bomb_understated,
    'pickle_bomb': pickle_bomb,
    'build_on_rebuild': build_on_rebuild,
    **HOSTILE_RECORDS,
    'safetensors_duplicate_key': safetensors_duplicate_key,
    'safetensors_overlap': safetensors_overlap,
    'safetensors_gap': safetensors_gap,
    'safetensors_metadata_list': safetensors_metadata_list,
    'safetensors_metadata_value': safetensors_metadata_value,
    'safetensors_deep_json': safetensors_deep_json,
    'pkl_os_system': lambda d: pkl_code(d, 'os', 'system', 'echo pwned'),
    'pkl_builtins_eval': lambda d: pkl_code(d, 'builtins', 'eval', '__import__("os")'),
    'pkl_numpy_load': lambda d: pkl_code(d, 'numpy', 'load', '/etc/passwd'),
    'pkl_reconstruct_dtype': lambda d: pkl_array(d, 'dtype_class.pkl', (1,),
                                                 cls=('numpy', 'dtype')),
    'pkl_shape_1GiB': lambda d: pkl_array(d, 'shape_1GiB.pkl', (1 << 28,)),
    'pkl_shape_2_62': lambda d: pkl_array(d, 'shape_2_62.pkl', (1 << 31, 1 << 31)),
    'pkl_negative_dim': lambda d: pkl_array(d, 'negative_dim.pkl', (-1, 4), data=bytes(16)),
    'pkl_data_short': lambda d: pkl_array(d, 'data_short.pkl', (4,), data=bytes(8)),
    'pkl_data_long': lambda d: pkl_array(d, 'data_long.pkl', (2,), data=bytes(16)),
    'pkl_object_dtype': lambda d: pkl_array(d, 'object.pkl', (2,), 'O8', bytes(16)),
    'pkl_truncated': pkl_truncated,
    'pkl_nested_150': lambda d: pkl_nested(d, 150),
    'pkl_nested_200k': lambda d: pkl_nested(d, 200_000),
    'fifo': fifo,
    'plain_directory': plain_directory,
    'empty_orbax_directory': empty_directory,
}


# --- Image cases ------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def png(path, width, height, *, bit_depth=8, color_type=0, rows=None) -> str:
  """A PNG of black pixels (or of the given raw filtered `rows`), written chunk by chunk.

  The pixel stream of a large black image is compressed once per MB and repeated, so an
  image of any size takes about a thousandth of its pixel bytes on disk.
  """
  channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
  if rows is None:
    total = height * (1 + width * channels * bit_depth // 8)
    stream, _, _ = deflate_repeated([(bytes(_MIB), total // _MIB), (bytes(total % _MIB), 1)])
    adler = 1
    for chunk in [bytes(_MIB)] * (total // _MIB) + [bytes(total % _MIB)]:
      adler = zlib.adler32(chunk, adler)
    pixels = b'\x78\xda' + stream + struct.pack('>I', adler)
  else:
    pixels = zlib.compress(rows, 9)
  header = struct.pack('>IIBBBBB', width, height, bit_depth, color_type, 0, 0, 0)
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', header) + _chunk(b'IDAT', pixels)
            + _chunk(b'IEND', b''))
  return str(path)


IMAGES = {
    'png_1x10000': lambda d: png(os.path.join(d, 'tall.png'), 1, 10_000,
                                 rows=bytes(2 * 10_000)),
    'png_1x100000': lambda d: png(os.path.join(d, 'taller.png'), 1, 100_000,
                                  rows=bytes(2 * 100_000)),
    'png_20000x20000': lambda d: png(os.path.join(d, 'huge.png'), 20_000, 20_000),
}
