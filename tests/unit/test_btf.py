"""BTF parser: hand-built blobs for the format's corners, then this machine's vmlinux BTF against bpftool.

The hand-built blobs are the real unit tests: each encodes exactly the layout under test, so expected
offsets follow from the blob and not from any kernel. The vmlinux tests compare the parser with an
independent reader of the same file (``bpftool btf dump ... format raw``), never with typed-in numbers.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sentinel.sensor import btf as B

# --- a BTF encoder ---------------------------------------------------------------------------------------


@dataclass
class BtfBuilder:
    """Encodes types and strings into raw BTF; each add_* returns the new type id (ids start at 1)."""

    records: list[list[int]] = field(default_factory=list)
    strings: bytearray = field(default_factory=lambda: bytearray(b"\0"))
    offsets: dict[str, int] = field(default_factory=lambda: {"": 0})

    def s(self, name: str) -> int:
        if name not in self.offsets:
            self.offsets[name] = len(self.strings)
            self.strings += name.encode() + b"\0"
        return self.offsets[name]

    def add(
        self, kind: int, name: str, vlen: int, size_or_type: int, extra: list[int], kflag: bool = False
    ) -> int:
        info = (int(kflag) << 31) | (kind << 24) | vlen
        self.records.append([self.s(name), info, size_or_type, *extra])
        return len(self.records)

    def int_(
        self, name: str, size: int, bits: int | None = None, bit_offset: int = 0, signed: bool = False
    ) -> int:
        data = (int(signed) << 24) | (bit_offset << 16) | (size * 8 if bits is None else bits)
        return self.add(B.KIND_INT, name, 0, size, [data])

    def ptr(self, target: int) -> int:
        return self.add(B.KIND_PTR, "", 0, target, [])

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self.add(B.KIND_ARRAY, "", 0, 0, [elem, index, nelems])

    def struct(
        self,
        name: str,
        size: int,
        members: list[tuple[str, int, int] | tuple[str, int, int, int]],
        *,
        union: bool = False,
        kflag: bool | None = None,
    ) -> int:
        """Members are (name, type, bit offset[, bitfield size]); kind_flag is set when any has a size."""
        kflag = any(len(m) == 4 and m[3] for m in members) if kflag is None else kflag
        extra: list[int] = []
        for m in members:
            bits = m[3] if len(m) == 4 else 0
            extra += [self.s(m[0]), m[1], (bits << 24) | m[2] if kflag else m[2]]
        kind = B.KIND_UNION if union else B.KIND_STRUCT
        return self.add(kind, name, len(members), size, extra, kflag)

    def fwd(self, name: str, union: bool = False) -> int:
        return self.add(B.KIND_FWD, name, 0, 0, [], union)

    def ref(self, kind: int, target: int, name: str = "") -> int:
        """TYPEDEF, CONST, VOLATILE, RESTRICT, TYPE_TAG: a record that points at another type."""
        return self.add(kind, name, 0, target, [])

    def enum(self, name: str, size: int, values: dict[str, int]) -> int:
        extra = [w for k, v in values.items() for w in (self.s(k), v & 0xFFFFFFFF)]
        return self.add(B.KIND_ENUM, name, len(values), size, extra)

    def enum64(self, name: str, values: dict[str, int]) -> int:
        extra = [w for k, v in values.items() for w in (self.s(k), v & 0xFFFFFFFF, v >> 32)]
        return self.add(B.KIND_ENUM64, name, len(values), 8, extra)

    def func_proto(self, ret: int, params: list[tuple[str, int]]) -> int:
        extra = [w for n, t in params for w in (self.s(n), t)]
        return self.add(B.KIND_FUNC_PROTO, "", len(params), ret, extra)

    def func(self, name: str, proto: int) -> int:
        return self.add(B.KIND_FUNC, name, 1, proto, [])  # vlen = linkage (global)

    def var(self, name: str, type_id: int) -> int:
        return self.add(B.KIND_VAR, name, 0, type_id, [1])

    def datasec(self, name: str, size: int, vars_: list[tuple[int, int, int]]) -> int:
        extra = [w for v in vars_ for w in v]
        return self.add(B.KIND_DATASEC, name, len(vars_), size, extra)

    def float_(self, name: str, size: int) -> int:
        return self.add(B.KIND_FLOAT, name, 0, size, [])

    def decl_tag(self, name: str, target: int, component: int) -> int:
        return self.add(B.KIND_DECL_TAG, name, 0, target, [component & 0xFFFFFFFF])

    def build(self, order: str = "<", magic: int = B.BTF_MAGIC) -> bytes:
        types = b"".join(struct.pack(f"{order}{len(r)}I", *r) for r in self.records)
        header = struct.pack(
            f"{order}HBBIIIII", magic, 1, 0, 24, 0, len(types), len(types), len(self.strings)
        )
        return header + types + bytes(self.strings)


def _kernelish() -> tuple[BtfBuilder, dict[str, int]]:
    """A small kernel-like type graph with every kind, placed before the structs so alignment matters."""
    b = BtfBuilder()
    t: dict[str, int] = {}
    t["uint"] = b.int_("unsigned int", 4)
    t["int"] = b.int_("int", 4, signed=True)
    t["ulong"] = b.int_("long unsigned int", 8)
    t["char"] = b.int_("char", 1)
    # Every other kind, so a wrong trailing size for any of them would misplace everything after it.
    t["proto"] = b.func_proto(t["int"], [("a", t["int"]), ("b", t["ulong"])])
    b.func("do_thing", t["proto"])
    t["var"] = b.var("some_var", t["ulong"])
    b.datasec(".data", 16, [(t["var"], 0, 8), (t["var"], 8, 8)])
    b.float_("double", 8)
    b.decl_tag("tag", t["proto"], -1)
    t["enum"] = b.enum("pid_type", 4, {"PIDTYPE_PID": 0, "PIDTYPE_TGID": 1, "PIDTYPE_MAX": 4})
    t["enum64"] = b.enum64("big", {"A": 1, "B": 1 << 40})
    b.ref(B.KIND_RESTRICT, t["int"])
    t["tagged"] = b.ref(B.KIND_TYPE_TAG, t["ulong"], "user")

    # struct dentry is forward-declared first, as in real BTF; the definition comes later.
    t["fwd_dentry"] = b.fwd("dentry")
    t["dentry_p"] = b.ptr(t["fwd_dentry"])
    t["vfsmount_fwd"] = b.fwd("vfsmount")
    t["vfsmount_p"] = b.ptr(t["vfsmount_fwd"])
    t["path"] = b.struct("path", 16, [("mnt", t["vfsmount_p"], 0), ("dentry", t["dentry_p"], 64)])
    t["fs_struct"] = b.struct(
        "fs_struct", 40, [("users", t["int"], 0), ("root", t["path"], 64), ("pwd", t["path"], 192)]
    )
    t["dentry"] = b.struct(
        "dentry", 24, [("d_flags", t["uint"], 0), ("d_parent", b.ptr(t["fwd_dentry"]), 64)]
    )

    # typedef chain and qualifiers: typedef struct { uid_t val; } kuid_t; with uid_t -> __kernel_uid32_t.
    t["kuid_inner"] = b.struct(
        "", 4, [("val", b.ref(B.KIND_TYPEDEF, b.ref(B.KIND_TYPEDEF, t["uint"], "x"), "uid_t"), 0)]
    )
    t["kuid_t"] = b.ref(B.KIND_TYPEDEF, t["kuid_inner"], "kuid_t")
    t["kuid_cv"] = b.ref(B.KIND_VOLATILE, b.ref(B.KIND_CONST, t["kuid_t"]))
    t["kuid_td2"] = b.ref(B.KIND_TYPEDEF, t["kuid_cv"], "kuid_alias_t")
    t["cred"] = b.struct(
        "cred",
        24,
        [
            ("usage", t["int"], 0),
            ("uid", t["kuid_t"], 32),
            ("euid", t["kuid_cv"], 64),
            ("suid", t["kuid_td2"], 96),
            ("user", t["tagged"], 128),
        ],
    )

    # struct inode { unsigned long i_ino; union { const unsigned int i_nlink; unsigned int __i_nlink; };
    #                struct { union { int deep_a; long deep_b; }; } ; char i_name[12]; int *i_ptrs[3]; }
    t["nlink_u"] = b.struct(
        "", 4, [("i_nlink", b.ref(B.KIND_CONST, t["uint"]), 0), ("__i_nlink", t["uint"], 0)], union=True
    )
    t["deep_u"] = b.struct("", 8, [("deep_a", t["int"], 0), ("deep_b", t["ulong"], 0)], union=True)
    t["deep_s"] = b.struct("", 8, [("", t["deep_u"], 0)])
    t["inode"] = b.struct(
        "inode",
        80,
        [
            ("i_ino", t["ulong"], 0),
            ("", t["nlink_u"], 64),
            ("", t["deep_s"], 128),
            ("i_name", b.array(t["char"], t["int"], 12), 192),
            ("i_ptrs", b.array(b.ptr(t["int"]), t["int"], 3), 320),
            ("i_paths", b.array(t["path"], t["int"], 2), 512),
        ],
    )

    # Bitfields with kind_flag set: unsigned a:1, b:3; then an ordinary int.
    t["flags"] = b.struct(
        "task_flags", 8, [("a", t["uint"], 0, 1), ("b", t["uint"], 1, 3), ("after", t["int"], 32)]
    )
    # The same layout in the old encoding (kind_flag 0, bit size carried by a dedicated INT).
    t["legacy"] = b.struct(
        "legacy_flags", 8, [("a", b.int_("unsigned int", 4, bits=1), 0), ("after", t["int"], 32)], kflag=False
    )
    t["union_top"] = b.struct(
        "sigval", 8, [("sival_int", t["int"], 0), ("sival_ptr", t["ulong"], 0)], union=True
    )
    return b, t


@pytest.fixture
def kb() -> tuple[B.Btf, dict[str, int]]:
    builder, ids = _kernelish()
    return B.parse_btf(builder.build(), "test.btf"), ids


# --- the format -------------------------------------------------------------------------------------------


def test_every_kind_is_walked_with_its_trailing_data(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, ids = kb
    builder, _ = _kernelish()
    assert len(btf) == len(builder.records)
    # Each record decodes to the kind it was written with: no record was read from the middle of another.
    for type_id, record in enumerate(builder.records, start=1):
        assert btf.type(type_id).kind == (record[1] >> 24) & 0x1F
    assert btf.type(ids["enum"]).kind_name == "ENUM"
    assert btf.type(ids["path"]).name == "path"
    assert btf.offset_of("fs_struct", "users") == 0


def test_big_endian_blob_parses_the_same(kb: tuple[B.Btf, dict[str, int]]) -> None:
    builder, _ = _kernelish()
    big = B.parse_btf(builder.build(order=">"))
    little, _ = kb
    assert len(big) == len(little)
    assert big.offset_of("fs_struct", "pwd.dentry") == little.offset_of("fs_struct", "pwd.dentry") == 32


def test_nested_struct_paths(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, _ = kb
    assert btf.offset_of("fs_struct", "root") == 8
    assert btf.offset_of("fs_struct", "root.mnt") == 8
    assert btf.offset_of("fs_struct", "pwd") == 24
    assert btf.offset_of("fs_struct", "pwd.dentry") == 32
    assert btf.field_size("fs_struct", "pwd") == 16
    assert btf.size_of("fs_struct") == 40
    assert btf.size_of("struct path") == 16


def test_pointer_fields_are_not_walked_through(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, _ = kb
    assert btf.field_size("path", "dentry") == 8
    with pytest.raises(B.BtfError, match=r"PTR.*not an embedded struct"):
        btf.offset_of("path", "dentry.d_parent")


def test_anonymous_union_members_are_found_transparently(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, _ = kb
    assert btf.offset_of("inode", "i_nlink") == 8
    assert btf.offset_of("inode", "__i_nlink") == 8
    assert btf.field_size("inode", "i_nlink") == 4
    assert btf.field("inode", "i_nlink").via_anonymous
    assert not btf.field("inode", "i_ino").via_anonymous
    # Two levels: anonymous struct holding an anonymous union.
    assert btf.offset_of("inode", "deep_b") == 16
    assert btf.field_size("inode", "deep_b") == 8


def test_typedef_const_volatile_chains(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, ids = kb
    assert btf.offset_of("cred", "uid.val") == 4
    assert btf.offset_of("cred", "euid.val") == 8  # volatile const kuid_t
    assert btf.offset_of("cred", "suid.val") == 12  # typedef -> volatile -> const -> typedef -> struct
    assert btf.field_size("cred", "suid") == 4
    assert btf.field_size("cred", "uid.val") == 4  # uid_t -> x -> unsigned int
    assert btf.field_size("cred", "user") == 8  # through a TYPE_TAG
    assert btf.struct_id("kuid_t") == ids["kuid_inner"]  # a typedef naming an anonymous struct
    assert btf.size_of("kuid_t") == 4
    assert btf.resolve(ids["kuid_cv"]) == ids["kuid_inner"]


def test_bitfields_have_no_byte_offset(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, _ = kb
    a, b_ = btf.field("task_flags", "a"), btf.field("task_flags", "b")
    assert (a.bit_offset, a.bitfield_size) == (0, 1)
    assert (b_.bit_offset, b_.bitfield_size) == (1, 3)
    assert btf.offset_of("task_flags", "after") == 4  # kind_flag decoding did not spill into later members
    assert btf.has_field("task_flags", "b")
    with pytest.raises(B.BtfError, match=r"task_flags\.b is a bitfield"):
        btf.offset_of("task_flags", "b")
    with pytest.raises(B.BtfError, match="bitfield"):
        btf.field_size("task_flags", "a")


def test_legacy_bitfield_encoding(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, _ = kb
    assert btf.field("legacy_flags", "a").bitfield_size == 1
    assert btf.offset_of("legacy_flags", "after") == 4
    with pytest.raises(B.BtfError, match="bitfield"):
        btf.offset_of("legacy_flags", "a")


def test_arrays_pointers_enums_unions(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, ids = kb
    assert btf.offset_of("inode", "i_name") == 24
    assert btf.field_size("inode", "i_name") == 12
    assert btf.field_size("inode", "i_ptrs") == 3 * 8
    assert btf.field_size("inode", "i_paths") == 2 * 16
    assert btf.type_size(ids["enum"]) == 4
    assert btf.type_size(ids["enum64"]) == 8
    assert btf.type_size(ids["var"]) == 8
    assert btf.size_of("union sigval") == 8
    assert btf.offset_of("sigval", "sival_ptr") == 0
    with pytest.raises(B.BtfError, match="no struct or union"):
        btf.size_of("struct sigval")  # it is a union
    with pytest.raises(B.BtfError, match="no size"):
        btf.type_size(ids["proto"])


def test_fwd_and_duplicate_names_pick_the_complete_struct() -> None:
    b = BtfBuilder()
    i = b.int_("int", 4)
    fwd = b.fwd("mount")
    small = b.struct("mount", 8, [("x", i, 0)])
    big = b.struct("mount", 16, [("mnt", i, 0), ("mnt_ns", i, 64)])
    b.fwd("only_declared")
    b.struct("empty", 0, [])
    b.fwd("empty")
    btf = B.parse_btf(b.build())
    assert btf.names["mount"] == [fwd, small, big]
    assert btf.struct_id("mount") == big  # complete over FWD, then the largest
    assert btf.offset_of("mount", "mnt_ns") == 8
    assert btf.size_of("empty") == 0  # an empty definition still beats a FWD
    with pytest.raises(B.BtfError, match="only forward-declared"):
        btf.size_of("only_declared")


def test_missing_struct_and_field_errors_name_them(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, _ = kb
    with pytest.raises(B.BtfError, match="no struct or union named 'nope'"):
        btf.offset_of("nope", "x")
    with pytest.raises(
        B.BtfError, match=r"struct fs_struct has no field 'pwd\.inode'.*has no member 'inode'"
    ):
        btf.offset_of("fs_struct", "pwd.inode")
    with pytest.raises(B.BtfError, match="bad field path"):
        btf.offset_of("fs_struct", "pwd..dentry")
    assert not btf.has_field("fs_struct", "umask")
    assert not btf.has_field("nope", "x")
    assert issubclass(B.BtfError, ValueError)


def test_kernel_offsets_lists_every_missing_field(kb: tuple[B.Btf, dict[str, int]]) -> None:
    btf, _ = kb
    spec = {"FS_PWD_DENTRY": ("fs_struct", "pwd.dentry"), "INODE_NLINK": ("inode", "i_nlink")}
    assert B.kernel_offsets(btf, spec) == {"FS_PWD_DENTRY": 32, "INODE_NLINK": 8}
    assert B.field_sizes(btf, spec) == {"FS_PWD_DENTRY": 8, "INODE_NLINK": 4}
    bad = {
        **spec,
        "TASK_LOGINUID": ("task_struct", "loginuid"),
        "FS_UMASK": ("fs_struct", "umask"),
        "FLAGS_B": ("task_flags", "b"),
    }
    with pytest.raises(B.BtfError) as info:
        B.kernel_offsets(btf, bad)
    message = str(info.value)
    assert message.startswith("3 kernel offsets not resolvable")
    for name in (
        "TASK_LOGINUID (task_struct.loginuid)",
        "FS_UMASK (fs_struct.umask)",
        "FLAGS_B (task_flags.b)",
    ):
        assert name in message
    assert "FS_PWD_DENTRY" not in message


# --- bad files --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(B.BtfError, match="no such file"):
        B.load_btf(tmp_path / "vmlinux")


@pytest.mark.parametrize("keep", [0, 10, 23, 24, 40, -1])
def test_truncated_files(tmp_path: Path, keep: int) -> None:
    data = _kernelish()[0].build()
    cut = tmp_path / "cut.btf"
    cut.write_bytes(data[:keep])
    with pytest.raises(B.BtfError, match="truncated"):
        B.load_btf(cut)


def test_truncated_type_record_is_detected() -> None:
    """A header that agrees with the file but whose last type record is cut short."""
    b = BtfBuilder()
    b.int_("int", 4)
    b.struct("s", 4, [("x", 1, 0)])
    data = bytearray(b.build())
    type_len = struct.unpack_from("<I", data, 12)[0]
    struct.pack_into("<II", data, 12, type_len - 4, type_len - 4)  # type_len, str_off
    del data[24 + type_len - 4 : 24 + type_len]
    with pytest.raises(B.BtfError, match=r"truncated type section: type \[2\]"):
        B.parse_btf(bytes(data))


def test_bad_magic_and_version(tmp_path: Path) -> None:
    builder = _kernelish()[0]
    with pytest.raises(B.BtfError, match="bad magic 0x1234"):
        B.parse_btf(builder.build(magic=0x1234))
    elf = tmp_path / "vmlinux.o"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(B.BtfError, match="an ELF file"):
        B.load_btf(elf)
    data = bytearray(builder.build())
    data[2] = 2
    with pytest.raises(B.BtfError, match="unsupported BTF version 2"):
        B.parse_btf(bytes(data))


def test_unknown_kind_is_an_error() -> None:
    b = BtfBuilder()
    b.add(25, "future", 0, 0, [])
    with pytest.raises(B.BtfError, match=r"unknown BTF kind 25 at type \[1\]"):
        B.parse_btf(b.build())


# --- this machine's kernel against bpftool ----------------------------------------------------------------

VMLINUX = Path(B.VMLINUX_BTF)

# The fields the probes read, as (struct, field path).
KERNEL_FIELDS: list[tuple[str, str]] = [
    *(
        ("task_struct", f)
        for f in (
            "cred",
            "real_cred",
            "loginuid",
            "sessionid",
            "group_leader",
            "start_boottime",
            "fs",
            "files",
        )
    ),
    ("task_struct", "signal"),
    ("task_struct", "mm"),
    *(("cred", f) for f in ("uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid")),
    ("cred", "cap_permitted"),
    ("cred", "cap_effective"),
    ("fs_struct", "root"),
    ("fs_struct", "pwd"),
    ("files_struct", "fdt"),
    ("fdtable", "fd"),
    ("fdtable", "max_fds"),
    ("file", "f_path"),
    ("file", "f_inode"),
    ("path", "dentry"),
    ("path", "mnt"),
    ("inode", "i_ino"),
    ("inode", "i_sb"),
    ("inode", "i_nlink"),
    ("super_block", "s_dev"),
    ("dentry", "d_name"),
    ("dentry", "d_inode"),
    ("dentry", "d_parent"),
    ("qstr", "name"),
    ("mm_struct", "exe_file"),
    ("signal_struct", "tty"),
    ("tty_struct", "index"),
    ("tty_struct", "driver"),
    ("tty_driver", "major"),
    ("tty_driver", "minor_start"),
    ("mount", "mnt"),
    ("mount", "mnt_ns"),
    ("vfsmount", "mnt_sb"),
    # Nested paths, resolved by the oracle one component at a time.
    ("fs_struct", "pwd.dentry"),
    ("fs_struct", "root.mnt"),
    ("file", "f_path.dentry"),
    ("dentry", "d_name.name"),
    ("cred", "uid.val"),
]

_TYPE_LINE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
_MEMBER_LINE = re.compile(r"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?$")
_ATTR = re.compile(r"(\w+)=(\S+)")


@dataclass
class DumpType:
    kind: str
    name: str
    attrs: dict[str, str]
    members: list[tuple[str, int, int, int]] = field(default_factory=list)


class BpftoolOracle:
    """``bpftool btf dump file ... format raw`` read back: the independent view of the same BTF."""

    def __init__(self, text: str) -> None:
        self.types: dict[int, DumpType] = {}
        current: DumpType | None = None
        for line in text.splitlines():
            if m := _TYPE_LINE.match(line):
                name = "" if m[3] == "(anon)" else m[3]
                current = DumpType(m[2], name, dict(_ATTR.findall(m[4].replace(",", " "))))
                self.types[int(m[1])] = current
            elif (m := _MEMBER_LINE.match(line)) and current and current.kind in ("STRUCT", "UNION"):
                name = "" if m[1] == "(anon)" else m[1]
                current.members.append((name, int(m[2]), int(m[3]), int(m[4] or 0)))

    def struct_id(self, name: str) -> int:
        ids = [
            i for i, t in self.types.items() if t.kind in ("STRUCT", "UNION") and t.name == name and t.members
        ]
        assert len(ids) == 1, f"bpftool dump: {len(ids)} complete definitions of {name!r}"
        return ids[0]

    def strip(self, type_id: int) -> int:
        while self.types[type_id].kind in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            type_id = int(self.types[type_id].attrs["type_id"])
        return type_id

    def size(self, type_id: int) -> int:
        t = self.types[self.strip(type_id)]
        if t.kind == "PTR":
            return 8
        if t.kind == "ARRAY":
            return int(t.attrs["nr_elems"]) * self.size(int(t.attrs["type_id"]))
        return int(t.attrs["size"])

    def member(self, aggregate: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of a top-level member, else inside anonymous members (offsets summed)."""
        members = self.types[aggregate].members
        for m_name, m_type, m_bits, _ in members:
            if m_name == name:
                return m_bits, m_type
        for m_name, m_type, m_bits, _ in members:
            inner = self.strip(m_type)
            if not m_name and self.types[inner].kind in ("STRUCT", "UNION"):
                found = self.member(inner, name)
                if found:
                    return m_bits + found[0], found[1]
        return None

    def offset_and_size(self, struct_name: str, path: str) -> tuple[int, int] | None:
        current, bits, type_id = self.struct_id(struct_name), 0, 0
        for part in path.split("."):
            if type_id:
                current = self.strip(type_id)
            found = self.member(current, part)
            if found is None:
                return None
            bits += found[0]
            type_id = found[1]
        assert bits % 8 == 0
        return bits // 8, self.size(type_id)


def _bpftool() -> str:
    found = shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("bpftool is not installed: apt-get install bpftool (scripts/setup.sh installs it)")
    return found


def _require_vmlinux() -> None:
    if not VMLINUX.exists():
        pytest.fail(
            f"{VMLINUX} is missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF); the sensor needs it"
        )


@pytest.fixture(scope="module")
def vmlinux() -> B.Btf:
    _require_vmlinux()
    return B.load_btf(VMLINUX)


@pytest.fixture(scope="module")
def oracle() -> BpftoolOracle:
    _require_vmlinux()
    done = subprocess.run(
        [_bpftool(), "btf", "dump", "file", str(VMLINUX), "format", "raw"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"bpftool btf dump failed: {done.stderr.strip()}"
    return BpftoolOracle(done.stdout)


def test_vmlinux_load_time(capsys: pytest.CaptureFixture[str]) -> None:
    _require_vmlinux()
    started = time.perf_counter()
    btf = B.load_btf()
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nvmlinux BTF: {len(btf)} types, {len(btf.names)} names, loaded in {elapsed * 1000:.0f} ms")


def test_vmlinux_type_walk_matches_bpftool(vmlinux: B.Btf, oracle: BpftoolOracle) -> None:
    assert len(vmlinux) == max(oracle.types) == len(oracle.types)
    for type_id in (1, len(vmlinux) // 2, len(vmlinux)):
        assert vmlinux.type(type_id).kind_name == oracle.types[type_id].kind


def test_vmlinux_every_struct_member_matches_bpftool(vmlinux: B.Btf, oracle: BpftoolOracle) -> None:
    """All members of all structs and unions: name, type, bit offset and bitfield size."""
    checked = 0
    for type_id, t in oracle.types.items():
        if t.kind not in ("STRUCT", "UNION"):
            continue
        got = [(m.name, m.type_id, m.bit_offset, m.bitfield_size) for m in vmlinux.members(type_id)]
        assert got == t.members, f"[{type_id}] {t.kind} {t.name}"
        assert vmlinux.type(type_id).size_or_type == int(t.attrs["size"])
        checked += 1
    assert checked > 1000


@pytest.mark.parametrize(("struct_name", "path"), KERNEL_FIELDS, ids=[f"{s}.{p}" for s, p in KERNEL_FIELDS])
def test_vmlinux_offsets_match_bpftool(
    vmlinux: B.Btf, oracle: BpftoolOracle, struct_name: str, path: str
) -> None:
    assert vmlinux.struct_id(struct_name) == oracle.struct_id(struct_name)
    expected = oracle.offset_and_size(struct_name, path)
    if expected is None:  # absent on this kernel (e.g. loginuid without CONFIG_AUDIT): both must agree
        assert not vmlinux.has_field(struct_name, path)
        with pytest.raises(B.BtfError, match=re.escape(struct_name)):
            vmlinux.offset_of(struct_name, path)
        return
    assert (vmlinux.offset_of(struct_name, path), vmlinux.field_size(struct_name, path)) == expected


def test_vmlinux_anonymous_members_are_reached(vmlinux: B.Btf, oracle: BpftoolOracle) -> None:
    """inode.i_nlink sits in an anonymous union on current kernels; it must be found all the same."""
    assert vmlinux.has_field("inode", "i_nlink")
    top_level = {name for name, *_ in oracle.types[oracle.struct_id("inode")].members}
    assert vmlinux.field("inode", "i_nlink").via_anonymous == ("i_nlink" not in top_level)
    assert vmlinux.size_of("task_struct") == int(oracle.types[oracle.struct_id("task_struct")].attrs["size"])
