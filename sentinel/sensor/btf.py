"""Kernel struct offsets from the running kernel's BTF (``/sys/kernel/btf/vmlinux``).

The probes are compiled by BCC against whatever kernel headers the host has, and on our machines those do
not match the running kernel (6.1 Debian headers on a 6.18 kernel), so compiled-in ``offsetof()`` values are
wrong. The kernel's own BTF describes the structs as they are actually laid out; this module reads it with
the standard library only (no libbpf, no third-party BTF package) and hands the loader byte offsets.

Raw BTF layout (``include/uapi/linux/btf.h``): a header, a type section of variable-length records and a
string section. Parsing is lazy: one pass records where each type record starts and which ids carry a
struct/union/typedef/fwd name; members are decoded only for the types a lookup actually walks.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from struct import Struct

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
HEADER = Struct("HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
POINTER_SIZE = 8  # vmlinux BTF of the 64-bit kernels we run on

KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

KIND_NAMES: dict[int, str] = {
    KIND_INT: "INT",
    KIND_PTR: "PTR",
    KIND_ARRAY: "ARRAY",
    KIND_STRUCT: "STRUCT",
    KIND_UNION: "UNION",
    KIND_ENUM: "ENUM",
    KIND_FWD: "FWD",
    KIND_TYPEDEF: "TYPEDEF",
    KIND_VOLATILE: "VOLATILE",
    KIND_CONST: "CONST",
    KIND_RESTRICT: "RESTRICT",
    KIND_FUNC: "FUNC",
    KIND_FUNC_PROTO: "FUNC_PROTO",
    KIND_VAR: "VAR",
    KIND_DATASEC: "DATASEC",
    KIND_FLOAT: "FLOAT",
    KIND_DECL_TAG: "DECL_TAG",
    KIND_TYPE_TAG: "TYPE_TAG",
    KIND_ENUM64: "ENUM64",
}

# Trailing data after the 12-byte common record, in 4-byte words: a fixed part, plus a part per vlen item.
# Every kind must be listed or the walk loses alignment; -1 marks kinds this parser does not know.
_FIXED_WORDS = [-1] * 32
_VLEN_WORDS = [0] * 32
for _kind, _fixed, _per_vlen in (
    (KIND_INT, 1, 0),  # u32 encoding/offset/bits
    (KIND_PTR, 0, 0),
    (KIND_ARRAY, 3, 0),  # struct btf_array: type, index_type, nelems
    (KIND_STRUCT, 0, 3),  # struct btf_member: name_off, type, offset
    (KIND_UNION, 0, 3),
    (KIND_ENUM, 0, 2),  # struct btf_enum: name_off, val
    (KIND_FWD, 0, 0),
    (KIND_TYPEDEF, 0, 0),
    (KIND_VOLATILE, 0, 0),
    (KIND_CONST, 0, 0),
    (KIND_RESTRICT, 0, 0),
    (KIND_FUNC, 0, 0),  # vlen holds the linkage, not a count
    (KIND_FUNC_PROTO, 0, 2),  # struct btf_param: name_off, type
    (KIND_VAR, 1, 0),  # struct btf_var: linkage
    (KIND_DATASEC, 0, 3),  # struct btf_var_secinfo: type, offset, size
    (KIND_FLOAT, 0, 0),
    (KIND_DECL_TAG, 1, 0),  # struct btf_decl_tag: component_idx
    (KIND_TYPE_TAG, 0, 0),
    (KIND_ENUM64, 0, 3),  # struct btf_enum64: name_off, val_lo32, val_hi32
):
    _FIXED_WORDS[_kind] = _fixed
    _VLEN_WORDS[_kind] = _per_vlen

_INDEXED = [False] * 32  # kinds whose names go into Btf.names: what struct lookups need
for _kind in (KIND_STRUCT, KIND_UNION, KIND_FWD, KIND_TYPEDEF):
    _INDEXED[_kind] = True

# Kinds that only qualify or rename another type; followed when looking for the struct underneath.
_TRANSPARENT = frozenset({KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG})
_AGGREGATES = frozenset({KIND_STRUCT, KIND_UNION})
_SIZED = frozenset({KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_STRUCT, KIND_UNION, KIND_DATASEC})
_MAX_CHAIN = 64  # typedef/modifier hops and anonymous-member nesting: beyond this the BTF is corrupt


class BtfError(ValueError):
    """The BTF is unreadable or malformed, or does not have the struct/field asked for."""


def _word_array() -> array[int]:
    """An empty array of 4-byte unsigned ints (BTF is made of u32 words)."""
    for code in ("I", "L"):
        if array(code).itemsize == 4:
            return array(code)
    raise BtfError("no 4-byte unsigned array type on this platform")


@dataclass(frozen=True, slots=True)
class BtfType:
    """One decoded type record header; ``size_or_type`` is a size for sized kinds, else a type id."""

    id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"KIND{self.kind}")


@dataclass(frozen=True, slots=True)
class Member:
    """A struct/union member; ``bitfield_size`` is 0 for ordinary (byte-addressable) members."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass(frozen=True, slots=True)
class Field:
    """A resolved field path: where it is from the start of the outer struct, and its type."""

    struct: str
    path: str
    bit_offset: int
    bitfield_size: int
    type_id: int
    via_anonymous: bool  # reached through at least one anonymous struct/union member

    @property
    def is_bitfield(self) -> bool:
        return self.bitfield_size != 0 or self.bit_offset % 8 != 0


@dataclass
class Btf:
    """A parsed BTF blob; build it with :func:`load_btf` or :func:`parse_btf`.

    ``starts[id]`` is the word index of type ``id``'s record (id 0 is void and has none); ``names`` maps
    struct, union, typedef and fwd names to their type ids, in id order.
    """

    source: str
    words: array[int]
    starts: array[int]
    strings: bytes
    names: dict[str, list[int]]
    pointer_size: int = POINTER_SIZE
    _members: dict[int, tuple[Member, ...]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        """Number of types, not counting void."""
        return len(self.starts) - 1

    # --- records ---------------------------------------------------------------------------------------

    def name_at(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` in the string section."""
        end = self.strings.find(b"\0", offset)
        if offset >= len(self.strings) or end < 0:
            raise BtfError(f"{self.source}: string offset {offset} is outside the string section")
        return self.strings[offset:end].decode("utf-8", "replace")

    def _start(self, type_id: int) -> int:
        if not 0 < type_id < len(self.starts):
            raise BtfError(f"{self.source}: type id {type_id} is out of range (1..{len(self.starts) - 1})")
        return self.starts[type_id]

    def type(self, type_id: int) -> BtfType:
        """The record header of ``type_id``."""
        pos = self._start(type_id)
        words = self.words
        info = words[pos + 1]
        return BtfType(
            id=type_id,
            kind=(info >> 24) & 0x1F,
            name=self.name_at(words[pos]),
            vlen=info & 0xFFFF,
            kind_flag=bool(info >> 31),
            size_or_type=words[pos + 2],
        )

    def _kind(self, type_id: int) -> int:
        return (self.words[self._start(type_id) + 1] >> 24) & 0x1F

    def members(self, type_id: int) -> tuple[Member, ...]:
        """Members of a STRUCT/UNION, decoded once and cached (most of vmlinux is never looked at)."""
        cached = self._members.get(type_id)
        if cached is not None:
            return cached
        pos = self._start(type_id)
        words = self.words
        info = words[pos + 1]
        kind = (info >> 24) & 0x1F
        if kind not in _AGGREGATES:
            raise BtfError(f"{self.source}: type [{type_id}] is {KIND_NAMES.get(kind, kind)}, not a struct")
        kind_flag = bool(info >> 31)
        out = []
        for i in range(info & 0xFFFF):
            q = pos + 3 + 3 * i
            name_off, member_type, offset = words[q], words[q + 1], words[q + 2]
            if kind_flag:  # high 8 bits: bitfield size (0 = not a bitfield), low 24: bit offset
                bits, offset = offset >> 24, offset & 0xFFFFFF
            else:
                bits, extra = self._legacy_bitfield(member_type)
                offset += extra
            out.append(Member(self.name_at(name_off), member_type, offset, bits))
        members = tuple(out)
        self._members[type_id] = members
        return members

    def _legacy_bitfield(self, type_id: int) -> tuple[int, int]:
        """(bits, extra bit offset) when kind_flag is 0: old BTF kept bitfield info in the INT type."""
        type_id = self.resolve(type_id)
        if type_id == 0 or self._kind(type_id) != KIND_INT:
            return 0, 0
        pos = self.starts[type_id]
        size, data = self.words[pos + 2], self.words[pos + 3]
        bits, extra = data & 0xFF, (data >> 16) & 0xFF
        if extra == 0 and bits == size * 8:
            return 0, 0
        return bits, extra

    def resolve(self, type_id: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag links to the underlying type id (0 = void)."""
        for _ in range(_MAX_CHAIN):
            if type_id == 0:
                return 0
            pos = self._start(type_id)
            if (self.words[pos + 1] >> 24) & 0x1F not in _TRANSPARENT:
                return type_id
            type_id = self.words[pos + 2]
        raise BtfError(f"{self.source}: typedef/modifier chain longer than {_MAX_CHAIN} (loop?)")

    def describe(self, type_id: int) -> str:
        """Short human description of a type for error messages, e.g. ``struct path`` or ``PTR``."""
        if type_id == 0:
            return "void"
        t = self.type(type_id)
        if t.kind in _AGGREGATES or t.kind == KIND_FWD:
            union = t.kind == KIND_UNION or (t.kind == KIND_FWD and t.kind_flag)
            prefix = ("fwd " if t.kind == KIND_FWD else "") + ("union" if union else "struct")
            return f"{prefix} {t.name or '(anon)'}"
        return f"{t.kind_name} {t.name}".rstrip() + f" [{type_id}]"

    # --- struct lookup ---------------------------------------------------------------------------------

    def struct_id(self, name: str) -> int:
        """Type id of the struct/union called ``name`` (a ``struct ``/``union `` prefix narrows the kind).

        vmlinux BTF can hold several types of one name (FWDs, or unrelated structs from different compile
        units that share a name). Complete definitions win over FWDs; among those, one with members wins
        over an empty one, then the largest, then the lowest id. A typedef naming a struct (``kernel_cap_t``)
        is accepted when no struct has the name.
        """
        wanted = _AGGREGATES
        bare = name.strip()
        for prefix, kind in (("struct ", KIND_STRUCT), ("union ", KIND_UNION)):
            if bare.startswith(prefix):
                wanted, bare = frozenset({kind}), bare[len(prefix) :].strip()
        ids = self.names.get(bare, [])
        complete = [i for i in ids if self._kind(i) in wanted]
        if complete:
            return max(complete, key=lambda i: (self.type(i).vlen > 0, self.type(i).size_or_type, -i))
        if wanted == _AGGREGATES:
            for i in ids:
                if self._kind(i) == KIND_TYPEDEF:
                    target = self.resolve(i)
                    if target and self._kind(target) in _AGGREGATES:
                        return target
        if any(self._kind(i) == KIND_FWD for i in ids):
            raise BtfError(f"{self.source}: {name!r} is only forward-declared in BTF (no definition)")
        raise BtfError(f"{self.source}: no struct or union named {name!r} in BTF")

    def size_of(self, name: str) -> int:
        """Size in bytes of the struct/union ``name``."""
        return self.type(self.struct_id(name)).size_or_type

    def type_size(self, type_id: int) -> int:
        """Size in bytes of any sized type: ints, enums, pointers, arrays, aggregates, through typedefs."""
        for _ in range(_MAX_CHAIN):
            type_id = self.resolve(type_id)
            if type_id == 0:
                raise BtfError(f"{self.source}: void has no size")
            t = self.type(type_id)
            if t.kind in _SIZED:
                return t.size_or_type
            if t.kind == KIND_PTR:
                return self.pointer_size
            if t.kind == KIND_ARRAY:
                pos = self.starts[type_id]
                elem, nelems = self.words[pos + 3], self.words[pos + 5]
                return nelems * self.type_size(elem) if nelems else 0
            if t.kind == KIND_VAR:
                type_id = t.size_or_type
                continue
            raise BtfError(f"{self.source}: {self.describe(type_id)} has no size")
        raise BtfError(f"{self.source}: type chain longer than {_MAX_CHAIN} (loop?)")

    # --- field paths -----------------------------------------------------------------------------------

    def _find_member(self, aggregate: int, name: str, depth: int = 0) -> tuple[int, Member, bool] | None:
        """(bit offset, member, via anonymous) of ``name`` in ``aggregate``, searching anonymous members."""
        if depth > _MAX_CHAIN:
            raise BtfError(f"{self.source}: anonymous members nested deeper than {_MAX_CHAIN} (loop?)")
        members = self.members(aggregate)
        for m in members:
            if m.name == name:
                return m.bit_offset, m, depth > 0
        for m in members:
            if m.name:
                continue
            inner = self.resolve(m.type_id)
            if inner and self._kind(inner) in _AGGREGATES:
                found = self._find_member(inner, name, depth + 1)
                if found is not None:
                    return m.bit_offset + found[0], found[1], True
        return None

    def field(self, struct: str, field_path: str) -> Field:
        """Resolve a dotted field path (``"pwd.dentry"``) in ``struct``, through anonymous members.

        Every component but the last must be an embedded struct/union: a pointer ends the walk, since its
        target is somewhere else in memory and needs its own read in the probe.
        """
        parts = field_path.split(".")
        if not field_path or any(not part.strip() for part in parts):
            raise BtfError(f"bad field path {field_path!r} for struct {struct}")
        current = self.struct_id(struct)
        bit_offset, bits, anonymous = 0, 0, False
        member: Member | None = None
        for i, part in enumerate(parts):
            walked = ".".join(parts[:i])
            if member is not None:
                if bits:
                    raise BtfError(f"{struct}.{walked} is a bitfield: it has no field {part!r}")
                current = self.resolve(member.type_id)
                if current == 0 or self._kind(current) not in _AGGREGATES:
                    raise BtfError(
                        f"{struct}.{walked} is {self.describe(current)}, not an embedded struct or union: "
                        f"cannot reach {field_path!r} (offsets do not go through pointers)"
                    )
            found = self._find_member(current, part.strip())
            if found is None:
                where = f"{struct}.{walked}" if walked else struct
                raise BtfError(
                    f"{self.source}: struct {struct} has no field {field_path!r} "
                    f"({where} ({self.describe(current)}) has no member {part!r})"
                )
            rel, member, via = found
            bit_offset += rel
            bits = member.bitfield_size
            anonymous = anonymous or via
        assert member is not None
        return Field(struct, field_path, bit_offset, bits, member.type_id, anonymous)

    def has_field(self, struct: str, field_path: str) -> bool:
        """Whether the struct exists and has the field (bitfields count; a missing struct is False)."""
        try:
            self.field(struct, field_path)
        except BtfError:
            return False
        return True

    def offset_of(self, struct: str, field_path: str) -> int:
        """Byte offset of ``field_path`` from the start of ``struct``; bitfields have none and raise."""
        f = self.field(struct, field_path)
        if f.is_bitfield:
            raise BtfError(
                f"{struct}.{field_path} is a bitfield (bit offset {f.bit_offset}, {f.bitfield_size} bits): "
                "it has no byte offset"
            )
        return f.bit_offset // 8

    def field_size(self, struct: str, field_path: str) -> int:
        """Size in bytes of the field's type (a pointer is ``pointer_size``); bitfields raise."""
        f = self.field(struct, field_path)
        if f.is_bitfield:
            raise BtfError(f"{struct}.{field_path} is a bitfield ({f.bitfield_size} bits): no byte size")
        return self.type_size(f.type_id)


# --- loading -------------------------------------------------------------------------------------------


def parse_btf(data: bytes, source: str = "<bytes>") -> Btf:
    """Parse a raw BTF blob (either byte order): validate the header and index every type record."""
    if len(data) < HEADER.size:
        raise BtfError(
            f"{source}: truncated: {len(data)} bytes, shorter than the {HEADER.size}-byte BTF header"
        )
    (magic,) = Struct("<H").unpack_from(data)
    if magic == BTF_MAGIC:
        order = "<"
    elif magic == 0x9FEB:
        order = ">"
    else:
        hint = (
            " (an ELF file: raw BTF such as /sys/kernel/btf/vmlinux is expected)"
            if data[:4] == b"\x7fELF"
            else ""
        )
        raise BtfError(f"{source}: bad magic 0x{magic:04x}, expected 0x{BTF_MAGIC:04x}: not raw BTF{hint}")
    _, version, _flags, hdr_len, type_off, type_len, str_off, str_len = Struct(
        order + HEADER.format
    ).unpack_from(data)
    if version != BTF_VERSION:
        raise BtfError(
            f"{source}: unsupported BTF version {version} (this parser reads version {BTF_VERSION})"
        )
    if hdr_len < HEADER.size:
        raise BtfError(f"{source}: header length {hdr_len} is shorter than the {HEADER.size}-byte header")
    for section, off, length in (("type", type_off, type_len), ("string", str_off, str_len)):
        end = hdr_len + off + length
        if end > len(data):
            raise BtfError(
                f"{source}: truncated: the {section} section ends at byte {end}, "
                f"the file has {len(data)} bytes"
            )
    if type_off % 4 or type_len % 4:
        raise BtfError(f"{source}: type section (offset {type_off}, length {type_len}) is not 4-byte aligned")
    strings = bytes(data[hdr_len + str_off : hdr_len + str_off + str_len])
    if strings[:1] not in (b"", b"\0"):
        raise BtfError(f"{source}: the string section does not start with the empty string")

    words = _word_array()
    words.frombytes(data[hdr_len + type_off : hdr_len + type_off + type_len])
    if (order == "<") != (sys.byteorder == "little"):
        words.byteswap()
    starts, named = _index_types(words, source)
    btf = Btf(source, words, starts, strings, {})
    for type_id in named:
        name = btf.name_at(words[starts[type_id]])
        if name:
            btf.names.setdefault(name, []).append(type_id)
    return btf


def _index_types(words: array[int], source: str) -> tuple[array[int], list[int]]:
    """One pass over the type section: where each record starts, and the ids worth indexing by name."""
    starts = _word_array()
    starts.append(0)  # id 0: void, no record
    append = starts.append
    named: list[int] = []
    fixed_words, vlen_words, indexed = _FIXED_WORDS, _VLEN_WORDS, _INDEXED
    end = len(words)
    pos = 0
    type_id = 0
    while pos < end:
        type_id += 1
        if pos + 3 > end:
            raise BtfError(f"{source}: truncated type section: type [{type_id}] is cut off")
        info = words[pos + 1]
        kind = (info >> 24) & 0x1F
        fixed = fixed_words[kind]
        if fixed < 0:
            raise BtfError(
                f"{source}: unknown BTF kind {kind} at type [{type_id}] (BTF newer than this parser?)"
            )
        append(pos)
        if indexed[kind]:
            named.append(type_id)
        pos += 3 + fixed + vlen_words[kind] * (info & 0xFFFF)
    if pos > end:
        raise BtfError(f"{source}: truncated type section: type [{type_id}] extends past its end")
    return starts, named


def load_btf(path: str | Path = VMLINUX_BTF) -> Btf:
    """Read and parse a raw BTF file, by default the running kernel's."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        hint = " (kernel built without CONFIG_DEBUG_INFO_BTF?)" if str(path) == VMLINUX_BTF else ""
        raise BtfError(f"{path}: no such file{hint}") from None
    except OSError as exc:
        raise BtfError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_btf(data, str(path))


# --- offset tables -------------------------------------------------------------------------------------


def _resolve_table(btf: Btf, spec: Mapping[str, tuple[str, str]], what: str, lookup: str) -> dict[str, int]:
    """Apply ``Btf.<lookup>`` to every (struct, field path) and report every failure at once."""
    out: dict[str, int] = {}
    errors: list[str] = []
    for macro, (struct, field_path) in spec.items():
        try:
            out[macro] = getattr(btf, lookup)(struct, field_path)
        except BtfError as exc:
            errors.append(f"{macro} ({struct}.{field_path}): {exc}")
    if errors:
        raise BtfError(
            f"{len(errors)} kernel {what} not resolvable from {btf.source}:\n  " + "\n  ".join(errors)
        )
    return out


def kernel_offsets(btf: Btf, spec: Mapping[str, tuple[str, str]]) -> dict[str, int]:
    """Macro name -> byte offset for a table of NAME -> (struct, field path); lists all failures together."""
    return _resolve_table(btf, spec, "offsets", "offset_of")


def field_sizes(btf: Btf, spec: Mapping[str, tuple[str, str]]) -> dict[str, int]:
    """Macro name -> field size in bytes, like :func:`kernel_offsets`."""
    return _resolve_table(btf, spec, "field sizes", "field_size")
