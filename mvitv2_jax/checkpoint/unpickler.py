"""A restricted pickle interpreter: iterative, bounded, and it never calls anything.

CPython's unpickler recurses in C on nested data (a deep enough file crashes the
process), sizes its memo by the largest index a file names, and calls whatever
`find_class` returns. This interpreter runs the binary opcodes of protocols 2 to 5 in a
loop, keeps the memo in a dict and builds only lists, dicts and tuples, no deeper than
MAX_DEPTH. A container cannot change once it sits inside another, so nothing is cyclic;
dict keys are scalars or flat tuples of them, so hashing one is cheap. Globals, calls,
persistent ids and BUILD go to a `Resolver`: the interpreter invokes nothing a file
names (NEWOBJ too: the resolver says what an instance of a class it allows stands for).
Every opcode and every byte of string data is charged to the read's `Budget`.
Python 2's 8-bit strings decode as `load`'s `encoding` says, as in `pickle.load`.

Malformed pickles raise `pickle.UnpicklingError`; pickles that are well formed but
outside these rules raise `CheckpointFormatError`.
"""

import collections
import pickle
import pickletools
import struct
from typing import Any, BinaryIO

from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint.limits import CheckpointFormatError, describe

MAX_DEPTH = 100
# An upper bound of what one opcode allocates: an object, its stack slot, a memo entry
# and this interpreter's record of it. Charged per opcode, it keeps objects in budget.
OPCODE_COST = 256
_MAX_LONG_BYTES = 256
_MAX_NAME_BYTES = 256
_CHARGE_EVERY = 64 << 10
_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_MUTABLE = (list, dict, collections.OrderedDict)
_DICTS = (dict, collections.OrderedDict)


class Resolver:
  """What a pickle's globals, calls, persistent ids and BUILDs mean; refuses all of them."""

  def find_class(self, module: str, name: str) -> Any:
    raise CheckpointFormatError(f'forbidden pickle global {module}.{name}')

  def call(self, func: Any, args: tuple) -> Any:
    del args
    raise CheckpointFormatError(f'pickle calls {describe(func)}, which is not callable')

  def new(self, cls: Any, args: tuple) -> Any:
    """NEWOBJ: `cls.__new__(cls, *args)` in Python; here whatever inert value stands for it."""
    del args
    raise CheckpointFormatError(f'pickle creates an instance of {describe(cls)}')

  def persistent_load(self, pid: Any) -> Any:
    raise CheckpointFormatError(f'unexpected persistent id {describe(pid)}')

  def build(self, obj: Any, state: Any):
    del state
    raise CheckpointFormatError(f'pickle sets the state of {describe(obj)}')


def check_key(key: Any):
  """Refuses dict keys other than scalars and flat tuples of scalars."""
  if type(key) in _SCALARS or (type(key) is tuple and all(type(k) in _SCALARS for k in key)):
    return
  raise CheckpointFormatError(
      f'dict key that is {describe(key)}: keys must be strings, numbers or flat tuples')


def load(f: BinaryIO, size: int, budget: limits.Budget, resolver: Resolver, *,
         encoding: str = 'utf-8') -> Any:
  """Runs one pickle from `f`, reading at most `size` bytes, and leaves `f` after it.

  Args:
    f: binary stream positioned at the pickle.
    size: the most bytes the pickle may take (the rest of its record or file).
    budget: charged for every opcode and for string data before it is read.
    resolver: turns globals, calls, persistent ids and BUILD into values.
    encoding: how Python 2 `str` (BINSTRING) decodes: 'utf-8' as torch.load does, or
      'latin-1', which keeps every byte (NumPy's array data among them).

  Returns:
    The unpickled object.
  """
  return _Machine(f, size, budget, resolver, encoding).run()


class _Machine:
  """The interpreter's state for one pickle."""

  def __init__(self, f, size, budget, resolver, encoding):
    self._read, self._readinto = f.read, f.readinto
    self._encoding = encoding
    self._size = self._left = size
    self._budget = budget
    self._resolver = resolver
    self._stack, self._marks, self._memo = [], [], {}
    # Containers by id: their nesting depth, and whether one is inside another. `_keep`
    # holds each so that its id is never reused; plain ints keep the GC's work small.
    self._depth, self._nested, self._keep = {}, set(), []
    self._pending = 0
    self._pos = 0
    self._result = None

  def run(self):
    dispatch = _DISPATCH
    while True:
      self._pos = self._size - self._left
      op = self._take(1)[0]
      handler = dispatch.get(op)
      if handler is None:
        info = pickletools.code2op.get(chr(op))
        raise CheckpointFormatError(
            f'unsupported pickle opcode {info.name if info else hex(op)} at byte {self._pos}')
      self._spend(OPCODE_COST)
      if handler(self):
        self._budget.charge(self._pending, "the pickle's objects")
        return self._result

  # --- Reading and accounting ---

  def _corrupt(self, problem: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f'{problem} at byte {self._pos}')

  def _take(self, n: int) -> bytes:
    if n > self._left:
      raise self._corrupt(f'pickle truncated: {n:,} bytes needed, {self._left:,} left')
    data = self._read(n)
    if len(data) != n:
      raise self._corrupt('pickle truncated')
    self._left -= n
    return data

  def _unpack(self, fmt: str) -> Any:
    return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

  def _spend(self, nbytes: int):
    self._pending += nbytes
    if self._pending >= _CHARGE_EVERY:
      self._budget.charge(self._pending, "the pickle's objects")
      self._pending = 0

  def _data(self, n: int) -> bytes:
    if n > self._left:
      raise self._corrupt(f'pickle truncated: a {n:,}-byte string, {self._left:,} bytes left')
    self._spend(n)
    return self._take(n)

  def _line(self) -> str:
    out = bytearray()
    while (byte := self._take(1)) != b'\n':
      out += byte
      if len(out) > _MAX_NAME_BYTES:
        raise self._corrupt('global name too long')
    return out.decode('utf-8')

  # --- The stack ---

  def _floor(self) -> int:
    return self._marks[-1] if self._marks else 0

  def _pop(self) -> Any:
    if len(self._stack) <= self._floor():
      raise self._corrupt('pickle stack underflow')
    return self._stack.pop()

  def _top(self) -> Any:
    if len(self._stack) <= self._floor():
      raise self._corrupt('pickle stack underflow')
    return self._stack[-1]

  def _pop_mark(self) -> list:
    if not self._marks:
      raise self._corrupt('pickle opcode without its MARK')
    start = self._marks.pop()
    items = self._stack[start:]
    del self._stack[start:]
    return items

  # --- Containers: depth, nesting, no cycles ---

  def _register(self, obj, depth: int):
    if depth > MAX_DEPTH:
      raise CheckpointFormatError(f'pickle nests containers more than {MAX_DEPTH} deep')
    self._depth[id(obj)] = depth
    self._keep.append(obj)
    return obj

  def _nest(self, item) -> int:
    """Marks `item` as held by a container; returns its depth (0 for leaves)."""
    if type(item) in _SCALARS:
      return 0
    depth = self._depth.get(id(item))
    if depth is None:  # A resolver's leaf: an array, a token.
      return 0
    self._nested.add(id(item))
    return depth

  def _new(self, obj, items):
    return self._register(obj, 1 + max((self._nest(i) for i in items), default=0))

  def _extend(self, container, items, kinds, what: str):
    depth = self._depth.get(id(container))
    if depth is None or not isinstance(container, kinds):
      raise CheckpointFormatError(f'pickle {what} {describe(container)}')
    if id(container) in self._nested:
      raise CheckpointFormatError(
          f'pickle {what} a container after placing it in another (cyclic data)')
    for item in items:
      if item is container:
        raise CheckpointFormatError(f'pickle {what} a container with itself (cyclic data)')
      depth = max(depth, self._nest(item) + 1)
    if depth > MAX_DEPTH:
      raise CheckpointFormatError(f'pickle nests containers more than {MAX_DEPTH} deep')
    self._depth[id(container)] = depth

  def _adopt(self, result, depth: int):
    if isinstance(result, (list, dict, tuple)) and id(result) not in self._depth:
      self._register(result, depth)
    return result

  # --- Opcodes; a true return value stops the machine ---

  def _proto(self):
    if self._take(1)[0] > pickle.HIGHEST_PROTOCOL:
      raise self._corrupt('unknown pickle protocol')

  def _frame(self):
    if self._unpack('<Q') > self._left:
      raise self._corrupt('pickle frame runs past the end')

  def _stop(self):
    self._result = self._pop()
    if self._stack or self._marks:
      raise self._corrupt('pickle stops with data left on its stack')
    return True

  def _mark(self):
    self._marks.append(len(self._stack))

  def _pop_op(self):
    self._pop()

  def _pop_mark_op(self):
    self._pop_mark()

  def _dup(self):
    self._stack.append(self._top())

  def _none(self):
    self._stack.append(None)

  def _true(self):
    self._stack.append(True)

  def _false(self):
    self._stack.append(False)

  def _binint(self):
    self._stack.append(self._unpack('<i'))

  def _binint1(self):
    self._stack.append(self._take(1)[0])

  def _binint2(self):
    self._stack.append(self._unpack('<H'))

  def _long(self, n: int):
    if not 0 <= n <= _MAX_LONG_BYTES:
      raise CheckpointFormatError(f'pickle integer of {n:,} bytes at byte {self._pos}')
    self._stack.append(int.from_bytes(self._take(n), 'little', signed=True))

  def _long1(self):
    self._long(self._take(1)[0])

  def _long4(self):
    self._long(self._unpack('<i'))

  def _binfloat(self):
    self._stack.append(self._unpack('>d'))

  def _text(self, n: int):
    self._stack.append(self._data(n).decode('utf-8', 'surrogatepass'))

  def _string(self, n: int):
    self._stack.append(self._data(n).decode(self._encoding, 'surrogatepass'))

  def _short_binstring(self):
    self._string(self._take(1)[0])

  def _binunicode(self):
    self._text(self._unpack('<I'))

  def _short_binunicode(self):
    self._text(self._take(1)[0])

  def _binunicode8(self):
    self._text(self._unpack('<Q'))

  def _binstring(self):
    n = self._unpack('<i')
    if n < 0:
      raise self._corrupt('negative string length')
    self._string(n)

  def _bytes(self, n: int):
    self._stack.append(self._data(n))

  def _binbytes(self):
    self._bytes(self._unpack('<I'))

  def _short_binbytes(self):
    self._bytes(self._take(1)[0])

  def _binbytes8(self):
    self._bytes(self._unpack('<Q'))

  def _bytearray8(self):
    n = self._unpack('<Q')
    if n > self._left:
      raise self._corrupt(f'pickle truncated: a {n:,}-byte string, {self._left:,} bytes left')
    self._spend(n)
    out = bytearray(n)  # Read in place: a bytes copy first would double the peak.
    if self._readinto(out) != n:
      raise self._corrupt('pickle truncated')
    self._left -= n
    self._stack.append(out)

  def _tuple_of(self, items):
    self._stack.append(self._new(tuple(items), items))

  def _empty_tuple(self):
    self._tuple_of([])

  def _tuple(self):
    self._tuple_of(self._pop_mark())

  def _tuple_n(self, n: int):
    items = [self._pop() for _ in range(n)][::-1]
    self._tuple_of(items)

  def _tuple1(self):
    self._tuple_n(1)

  def _tuple2(self):
    self._tuple_n(2)

  def _tuple3(self):
    self._tuple_n(3)

  def _empty_list(self):
    self._stack.append(self._register([], 1))

  def _list(self):
    items = self._pop_mark()
    self._stack.append(self._new(list(items), items))

  def _append(self):
    item = self._pop()
    target = self._top()
    self._extend(target, (item,), list, 'appends to')
    target.append(item)

  def _appends(self):
    items = self._pop_mark()
    target = self._top()
    self._extend(target, items, list, 'appends to')
    target.extend(items)

  def _empty_dict(self):
    self._stack.append(self._register({}, 1))

  def _set_items(self, target, items):
    if len(items) % 2:
      raise self._corrupt('odd number of dict items')
    for key in items[::2]:
      check_key(key)
    self._extend(target, items, _DICTS, 'sets items of')
    for i in range(0, len(items), 2):
      target[items[i]] = items[i + 1]

  def _dict(self):
    items = self._pop_mark()
    target = self._register({}, 1)
    self._set_items(target, items)
    self._stack.append(target)

  def _setitem(self):
    value = self._pop()
    key = self._pop()
    self._set_items(self._top(), [key, value])

  def _setitems(self):
    items = self._pop_mark()
    self._set_items(self._top(), items)

  def _get(self, index: int):
    if index not in self._memo:
      raise self._corrupt(f'memo entry {index} read before it is written')
    self._stack.append(self._memo[index])

  def _binget(self):
    self._get(self._take(1)[0])

  def _long_binget(self):
    self._get(self._unpack('<I'))

  def _binput(self):
    self._memo[self._take(1)[0]] = self._top()

  def _long_binput(self):
    self._memo[self._unpack('<I')] = self._top()

  def _memoize(self):
    self._memo[len(self._memo)] = self._top()

  def _global(self):
    module = self._line()
    self._stack.append(self._resolver.find_class(module, self._line()))

  def _stack_global(self):
    name, module = self._pop(), self._pop()
    if not (type(name) is str and type(module) is str and
            len(name) + len(module) <= _MAX_NAME_BYTES):
      raise self._corrupt('STACK_GLOBAL needs two short strings')
    self._stack.append(self._resolver.find_class(module, name))

  def _reduce(self):
    args = self._pop()
    func = self._pop()
    if type(args) is not tuple:
      raise self._corrupt('REDUCE arguments are not a tuple')
    depth = self._nest(args)
    self._stack.append(self._adopt(self._resolver.call(func, args), depth))

  def _newobj(self):
    args = self._pop()
    cls = self._pop()
    if type(args) is not tuple:
      raise self._corrupt('NEWOBJ arguments are not a tuple')
    depth = self._nest(args)
    self._stack.append(self._adopt(self._resolver.new(cls, args), depth))

  def _binpersid(self):
    pid = self._pop()
    depth = self._nest(pid)
    self._stack.append(self._adopt(self._resolver.persistent_load(pid), depth))

  def _build(self):
    state = self._pop()
    target = self._top()
    if type(target) in _SCALARS or id(target) in self._depth:
      self._extend(target, (state,), _MUTABLE, 'sets the state of')
    else:  # A resolver's leaf (a token it made): the state is the resolver's to read.
      self._nest(state)
    self._resolver.build(target, state)


_OPS = {
    pickle.PROTO: _Machine._proto, pickle.FRAME: _Machine._frame,
    pickle.STOP: _Machine._stop, pickle.MARK: _Machine._mark, pickle.POP: _Machine._pop_op,
    pickle.POP_MARK: _Machine._pop_mark_op, pickle.DUP: _Machine._dup,
    pickle.NONE: _Machine._none, pickle.NEWTRUE: _Machine._true,
    pickle.NEWFALSE: _Machine._false, pickle.BININT: _Machine._binint,
    pickle.BININT1: _Machine._binint1, pickle.BININT2: _Machine._binint2,
    pickle.LONG1: _Machine._long1, pickle.LONG4: _Machine._long4,
    pickle.BINFLOAT: _Machine._binfloat, pickle.BINUNICODE: _Machine._binunicode,
    pickle.SHORT_BINUNICODE: _Machine._short_binunicode,
    pickle.BINUNICODE8: _Machine._binunicode8, pickle.BINSTRING: _Machine._binstring,
    pickle.SHORT_BINSTRING: _Machine._short_binstring, pickle.BINBYTES: _Machine._binbytes,
    pickle.SHORT_BINBYTES: _Machine._short_binbytes, pickle.BINBYTES8: _Machine._binbytes8,
    pickle.BYTEARRAY8: _Machine._bytearray8,
    pickle.EMPTY_TUPLE: _Machine._empty_tuple, pickle.TUPLE: _Machine._tuple,
    pickle.TUPLE1: _Machine._tuple1, pickle.TUPLE2: _Machine._tuple2,
    pickle.TUPLE3: _Machine._tuple3, pickle.EMPTY_LIST: _Machine._empty_list,
    pickle.LIST: _Machine._list, pickle.APPEND: _Machine._append,
    pickle.APPENDS: _Machine._appends, pickle.EMPTY_DICT: _Machine._empty_dict,
    pickle.DICT: _Machine._dict, pickle.SETITEM: _Machine._setitem,
    pickle.SETITEMS: _Machine._setitems, pickle.BINGET: _Machine._binget,
    pickle.LONG_BINGET: _Machine._long_binget, pickle.BINPUT: _Machine._binput,
    pickle.LONG_BINPUT: _Machine._long_binput, pickle.MEMOIZE: _Machine._memoize,
    pickle.GLOBAL: _Machine._global, pickle.STACK_GLOBAL: _Machine._stack_global,
    pickle.REDUCE: _Machine._reduce, pickle.NEWOBJ: _Machine._newobj,
    pickle.BINPERSID: _Machine._binpersid,
    pickle.BUILD: _Machine._build,
}
_DISPATCH = {code[0]: handler for code, handler in _OPS.items()}
