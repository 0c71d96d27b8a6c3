"""The restricted pickle interpreter: same values as pickle for plain data, and its rules."""

import collections
import io
import pickle

import pytest

from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint import unpickler
from mvitv2_jax.checkpoint.limits import CheckpointFormatError


def _load(data: bytes, resolver=None, **kwargs):
  budget = limits.Budget(declared=0)
  return unpickler.load(io.BytesIO(data), len(data), budget, resolver or unpickler.Resolver(),
                        **kwargs)


_shared = [1, 2]
PLAIN = [
    None, True, False, 0, 255, 65535, -1, 2**31 - 1, -2**31, 2**63, -2**100, 1.5, float('inf'),
    '', 'ascii', 'ünïcode \u2603', 'x' * 300, b'', b'\x00\xff', b'y' * 300, (), (1,), (1, 2),
    (1, 2, 3), tuple(range(10)), [], [1, [2, [3]]], list(range(2000)), {}, {'a': 1, 2: 'b'},
    {(1, 'x'): None}, {str(i): i for i in range(2500)}, {'shared': (_shared, _shared)},
    {'nested': {'deeper': {'list': [{'x': (1.0, None)}]}}},
]


# Protocol 2 pickles bytes as a call (of _codecs.encode or bytes), which the reader refuses.
_PLAIN_CASES = [(protocol, i) for protocol in (2, 3, 4, 5) for i, value in enumerate(PLAIN)
                if not (protocol == 2 and isinstance(value, bytes))]


@pytest.mark.parametrize('protocol, index', _PLAIN_CASES)
def test_plain_data_reads_as_pickle_reads_it(protocol, index):
  value = PLAIN[index]
  data = pickle.dumps(value, protocol=protocol)
  got = _load(data)
  assert got == pickle.loads(data)
  assert type(got) is type(value)


def test_shared_references_stay_shared():
  got = _load(pickle.dumps({'shared': (_shared, _shared)}, protocol=2))
  assert got['shared'][0] is got['shared'][1]


def test_python2_ordered_dict_and_strings():
  class Resolver(unpickler.Resolver):

    def find_class(self, module, name):
      assert (module, name) == ('collections', 'OrderedDict')
      return 'OrderedDict'

    def call(self, func, args):
      assert func == 'OrderedDict' and args == ([['a', 1], ['b', 2]],)
      return collections.OrderedDict(args[0])

  # What Python 2 wrote for OrderedDict([('a', 1), ('b', 2)]), str as SHORT_BINSTRING.
  data = (b'\x80\x02ccollections\nOrderedDict\nq\x00]q\x01(]q\x02(U\x01aK\x01e]q\x03'
          b'(U\x01bK\x02ee\x85Rq\x04.')
  assert list(_load(data, Resolver()).items()) == [('a', 1), ('b', 2)]


@pytest.mark.parametrize('encoding', ['utf-8', 'latin-1'])
def test_python2_str_decodes_as_told(encoding):
  # SHORT_BINSTRING b'caf\xc3\xa9', BINSTRING of 300 bytes: both UTF-8, read either way.
  data = b'\x80\x02U\x05caf\xc3\xa9T\x2c\x01\x00\x00' + 'é'.encode() * 150 + b'\x86.'
  got = _load(data, encoding=encoding)
  assert got == pickle.loads(data, encoding=encoding, errors='surrogatepass')
  assert got[0] == ('café' if encoding == 'utf-8' else 'caf\xc3\xa9')


def test_protocol_5_bytearray():
  data = pickle.dumps({'buffer': bytearray(b'\x00\xff' * 100)}, protocol=5)
  got = _load(data)
  assert type(got['buffer']) is bytearray and got == pickle.loads(data)


def test_build_on_a_resolver_token_goes_to_the_resolver():
  class Token:
    state = None

  token = Token()

  class Resolver(unpickler.Resolver):

    def find_class(self, module, name):
      return token

    def build(self, obj, state):
      assert obj is token
      obj.state = state

  # GLOBAL x.y, then BUILD {'a': 1} on it.
  assert _load(b'\x80\x02cx\ny\n}X\x01\x00\x00\x00aK\x01sb.', Resolver()) is token
  assert token.state == {'a': 1}


@pytest.mark.parametrize('data,pattern', [
    (b'\x80\x02]q\x00h\x00a.', 'with itself'),  # A list appended to itself.
    (b'\x80\x02]q\x00]h\x00a0h\x00K\x01a.', 'after placing it in another'),
    (b'\x80\x02}]K\x01s.', 'dict key that is a list'),
    (b'\x80\x02}K\x01K\x02\x86\x85K\x01s.', 'dict key that is a tuple of 1 items'),
    (b'\x80\x02\x8b\x01\x01\x00\x00' + bytes(257) + b'.', 'integer of 257 bytes'),
    (b'\x80\x02cos\nsystem\n.', 'forbidden pickle global os.system'),
    (b'\x80\x02N)\x81.', 'pickle creates an instance of None'),
    (b'\x80\x02I1\n.', 'unsupported pickle opcode INT'),
    (b'\x80\x02}K\x01b.', 'sets the state of a dict'),
    (b'\x80\x02N\x8c\x04evilb.', 'sets the state of None'),
])
def test_rules(data, pattern):
  with pytest.raises(CheckpointFormatError, match=pattern):
    _load(data)


@pytest.mark.parametrize('data,pattern', [
    (b'\x80\x02X\xff\xff\xff\x7fabc', "a 2,147,483,647-byte string, 3 bytes left"),
    (b'\x80\x02h\x05.', 'memo entry 5 read before it is written'),
    (b'\x80\x02a.', 'stack underflow'),
    (b'\x80\x02N', 'pickle truncated'),
    (b'\x80\x02NN.', 'data left on its stack'),
])
def test_malformed(data, pattern):
  with pytest.raises(pickle.UnpicklingError, match=pattern):
    _load(data)


def test_memo_index_costs_one_entry():
  # None, LONG_BINPUT 2**32 - 1, POP, LONG_BINGET 2**32 - 1.
  assert _load(b'\x80\x02Nr\xff\xff\xff\xff0j\xff\xff\xff\xff.') is None


def test_nesting_limit():
  deep = b'\x80\x02' + b']' * 101 + b'a' * 100 + b'.'
  assert isinstance(_load(b'\x80\x02' + b']' * 100 + b'a' * 99 + b'.'), list)
  with pytest.raises(CheckpointFormatError, match='more than 100 deep'):
    _load(deep)


def test_objects_are_charged_to_the_budget():
  data = b'\x80\x02(' + b']' * 100_000 + b'l.'  # 100k empty lists: 25 MB of charges.
  with pytest.raises(CheckpointFormatError, match="the pickle's objects"):
    _load(data)
