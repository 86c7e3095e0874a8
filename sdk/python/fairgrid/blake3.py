"""BLAKE3 (the default 32-byte hash), in pure Python, to check a trained
model against the hash the node reports. About a megabyte a second: fine
for models, not meant for anything bulky."""

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
       0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START, _CHUNK_END, _PARENT, _ROOT = 1, 2, 4, 8
_CHUNK_LEN, _BLOCK_LEN = 1024, 64
_M = 0xFFFFFFFF

# The message word each G call of each of the 7 rounds takes, after the
# permutations, computed once.
_SCHEDULE = []
_order = list(range(16))
for _ in range(7):
    _SCHEDULE.append(tuple(_order))
    _order = [_order[p] for p in _PERM]


def _compress(cv, m, counter, block_len, flags):
    s = [cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
         _IV[0], _IV[1], _IV[2], _IV[3],
         counter & _M, (counter >> 32) & _M, block_len, flags]
    for sch in _SCHEDULE:
        for a, b, c, d, x, y in ((0, 4, 8, 12, 0, 1), (1, 5, 9, 13, 2, 3),
                                 (2, 6, 10, 14, 4, 5), (3, 7, 11, 15, 6, 7),
                                 (0, 5, 10, 15, 8, 9), (1, 6, 11, 12, 10, 11),
                                 (2, 7, 8, 13, 12, 13), (3, 4, 9, 14, 14, 15)):
            sa = (s[a] + s[b] + m[sch[x]]) & _M
            sd = s[d] ^ sa
            sd = ((sd >> 16) | (sd << 16)) & _M
            sc = (s[c] + sd) & _M
            sb = s[b] ^ sc
            sb = ((sb >> 12) | (sb << 20)) & _M
            sa = (sa + sb + m[sch[y]]) & _M
            sd ^= sa
            sd = ((sd >> 8) | (sd << 24)) & _M
            sc = (sc + sd) & _M
            sb ^= sc
            s[a], s[b], s[c], s[d] = sa, ((sb >> 7) | (sb << 25)) & _M, sc, sd
    return [s[i] ^ s[i + 8] for i in range(8)]


def _words(block):
    block = block.ljust(_BLOCK_LEN, b"\0")
    return [int.from_bytes(block[i:i + 4], "little") for i in range(0, 64, 4)]


def _chunk_output(data, counter):
    """The chunk's last block and its chaining value before it."""
    cv = _IV
    blocks = [data[i:i + _BLOCK_LEN] for i in range(0, len(data), _BLOCK_LEN)] or [b""]
    for i, block in enumerate(blocks[:-1]):
        cv = _compress(cv, _words(block), counter, _BLOCK_LEN, _CHUNK_START if i == 0 else 0)
    start = _CHUNK_START if len(blocks) == 1 else 0
    return (cv, _words(blocks[-1]), counter, len(blocks[-1]), start | _CHUNK_END)


def _parent(left, right):
    return (_IV, list(left) + list(right), 0, _BLOCK_LEN, _PARENT)


def blake3(data):
    """The 32-byte BLAKE3 hash of `data`, as hex."""
    data = bytes(data)
    stack = []
    chunks = max(1, (len(data) + _CHUNK_LEN - 1) // _CHUNK_LEN)
    for n in range(chunks - 1):
        cv = _compress(*_chunk_output(data[n * _CHUNK_LEN:(n + 1) * _CHUNK_LEN], n))
        total = n + 1
        while total & 1 == 0:
            cv = _compress(*_parent(stack.pop(), cv))
            total >>= 1
        stack.append(cv)
    out = _chunk_output(data[(chunks - 1) * _CHUNK_LEN:], chunks - 1)
    while stack:
        out = _parent(stack.pop(), _compress(*out))
    cv, words, counter, block_len, flags = out
    root = _compress(cv, words, 0, block_len, flags | _ROOT)
    return b"".join(w.to_bytes(4, "little") for w in root).hex()
