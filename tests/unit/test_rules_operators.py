"""Every operator on every field type, missing values, value conversion, transformers and val()."""

from __future__ import annotations

import pytest

from sentinel.events import AF_INET6, AF_UNIX, FLAG_CREATED, FLAG_CREATED_KNOWN, EventType
from sentinel.rules import load_text
from tests.unit.rules_support import connect_ctx, errors, exec_ctx, holds, open_ctx, refused, rule_yaml

SHADOW = open_ctx("/etc/shadow", raw="../etc/shadow")
EXEC = exec_ctx()  # bash -c "id; uname -a", child of nginx, child of systemd; uid 33 www-data


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("fd.name = /etc/shadow", True),
        ("fd.name == /etc/shadow", True),
        ("fd.name = /etc/passwd", False),
        ("fd.name != /etc/passwd", True),
        ("fd.name != /etc/shadow", False),
        ("fd.name contains /sha", True),
        ("fd.name contains SHA", False),
        ("fd.name icontains /SHA", True),
        ("fd.name startswith /etc/", True),
        ("fd.name startswith /usr/", False),
        ("fd.name endswith dow", True),
        ("fd.name endswith .conf", False),
        ("fd.name glob /etc/*", True),
        ("fd.name glob '/etc/sh?dow'", True),
        ("fd.name glob '/etc/[rs]hadow'", True),
        ("fd.name glob '/etc/[!s]hadow'", False),
        ("fd.name glob /ETC/*", False),
        ("fd.name iglob /ETC/SH*", True),
        ("fd.name glob /etc", False),
        ("fd.name pmatch (/etc)", True),
        ("fd.name pmatch (/etc/)", True),
        ("fd.name pmatch (/et)", False),
        ("fd.name pmatch (/usr, /etc/shadow)", True),
        ("fd.name pmatch (/)", True),
        ("fd.name in (/etc/passwd, /etc/shadow)", True),
        ("fd.name in (/etc/passwd)", False),
        ("fd.name in ()", False),
        ("fd.name intersects (/etc/shadow)", True),
        ("fd.name exists", True),
        ("fd.name regex '/etc/s.*'", True),
        ("fd.name regex 'etc'", False),  # a full match, not a search
        ("fd.name regex '.*etc.*'", True),
        ("fd.name bcontains 2f736861", True),  # "/sha"
        ("fd.name bstartswith 2f657463", True),  # "/etc"
        ("fd.name bstartswith 2f757372", False),
        ("fd.nameraw = ../etc/shadow", True),
    ],
)
def test_string_operators(condition: str, expected: bool) -> None:
    assert holds(condition, SHADOW) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("proc.pid = 4242", True),
        ("proc.pid > 1000", True),
        ("proc.pid >= 4242", True),
        ("proc.pid < 4242", False),
        ("proc.pid <= 4242", True),
        ("proc.pid != 1", True),
        ("proc.pid in (1, 4242)", True),
        ("proc.pid in (1, 2)", False),
        ("proc.pid = 0x1092", True),  # hex is a number too
        ("user.uid = 33", True),
        ("user.uid < 1000", True),
        ("proc.cmdnargs = 2", True),
        ("proc.ppid = 900", True),
        ("proc.apid[2] = 800", True),
        ("proc.tty = 0", True),
        ("evt.rawres = 0", True),
        ("evt.rawres < 0", False),
    ],
)
def test_int_operators(condition: str, expected: bool) -> None:
    assert holds(condition, EXEC) is expected


def test_bool_operators() -> None:
    write = open_ctx("/etc/cron.d/x", flags=0o1101)
    read = open_ctx("/etc/hosts", flags=0)
    assert holds("evt.is_open_write = true", write)
    assert not holds("evt.is_open_write = true", read)
    assert holds("evt.is_open_write = false", read)
    assert holds("evt.is_open_write != true", read)
    assert holds("evt.is_open_read = TRUE", read)
    assert holds("evt.is_open_create = true", write)
    assert holds("evt.failed = false", read)
    assert holds("evt.failed = true", open_ctx("/nope", ret=-2))
    assert holds("evt.is_open_write exists", read)


def test_a_connects_local_end_fills_falcos_client_fields() -> None:
    """fd.cip/fd.cport/fd.lip/fd.lport and fd.name's client part of a connect: the local end the probe read
    (Falco's view of a client socket); missing, and 0.0.0.0:0 in fd.name, when it could not."""
    from sentinel.rules.fixture_context import local_end

    ctx = connect_ctx("203.0.113.7", 443)
    ctx.ev.sys_extra = local_end(ctx.ev.family, "192.0.2.5", 40001)
    assert holds("fd.cip = 192.0.2.5 and fd.cport = 40001 and fd.lip = 192.0.2.5 and fd.lport = 40001", ctx)
    assert holds("fd.name = 192.0.2.5:40001->203.0.113.7:443", ctx)
    assert holds("fd.cip in (192.0.2.0/24)", ctx)
    unknown = connect_ctx("203.0.113.7", 443)
    assert holds("not fd.cip exists and fd.name startswith 0.0.0.0:0->", unknown)


def test_open_create_means_the_kernel_created_the_file() -> None:
    """Falco's evt.is_open_create and the O_F_CREATED flag mean the open created the file (FMODE_CREATED):
    a `>` onto an existing file is neither; where the probe could not tell, O_CREAT on a success stands."""
    made = open_ctx("/tmp/new", flags=0o1101, evflags=FLAG_CREATED_KNOWN | FLAG_CREATED)
    existing = open_ctx("/dev/null", flags=0o1101, evflags=FLAG_CREATED_KNOWN)
    assert holds("evt.is_open_create = true", made) and holds("evt.arg.flags contains O_F_CREATED", made)
    assert holds("evt.is_open_create = false", existing)
    assert not holds("evt.arg.flags contains O_F_CREATED", existing)
    assert holds("evt.is_open_create = false", open_ctx("/tmp/x", flags=0o1301, ret=-17))  # EEXIST


def test_ip_and_network_operators() -> None:
    ctx = connect_ctx("10.1.2.3", 443)
    assert holds("fd.sip = 10.1.2.3", ctx)
    assert holds("fd.sip = '10.1.2.3'", ctx)
    assert not holds("fd.sip = 10.1.2.4", ctx)
    assert holds("fd.sip != 10.1.2.4", ctx)
    assert holds("fd.sip in (192.168.0.0/16, 10.0.0.0/8)", ctx)
    assert holds('fd.snet in ("10.0.0.0/8")', ctx)
    assert holds("fd.snet = 10.1.0.0/16", ctx)
    assert not holds("fd.rnet in (172.16.0.0/12)", ctx)
    assert holds("fd.sport = 443 and fd.rport = 443 and fd.l4proto = tcp", ctx)
    v6 = connect_ctx("2001:db8::1", 22, family=AF_INET6)
    assert holds("fd.sip in (2001:db8::/32)", v6)
    assert holds("fd.sip = 2001:0db8:0000::1", v6)  # compared as addresses, not text
    assert holds("fd.typechar = 6 and fd.sockfamily = ip and fd.type = ipv6", v6)
    mapped = connect_ctx("::ffff:10.0.0.5", 80, family=AF_INET6)
    assert holds("fd.snet in (10.0.0.0/8)", mapped)


def test_missing_values_never_match_but_not_does() -> None:
    ctx = exec_ctx()
    for cond in (
        "fd.name = x",
        "fd.name != x",
        "fd.name exists",
        "fd.name contains x",
        "fd.sport > 1",
        "fd.sip in (10.0.0.0/8)",
        "proc.aname[9] = x",
        "proc.sid = 1",
        "proc.env contains HOME",
        "fd.name pmatch (/)",
        "fd.name glob *",
        "container.healthcheck = x",
    ):
        assert not holds(cond, ctx), cond
        assert holds(f"not {cond}", ctx), cond


def test_ancestors_without_index_match_any() -> None:
    ctx = exec_ctx()
    assert holds("proc.aname = nginx", ctx)
    assert holds("proc.aname = systemd", ctx)
    assert not holds("proc.aname = bash", ctx)  # N >= 1 only: the process itself is aname[0]
    assert holds("proc.aname[0] = bash and proc.aname[1] = nginx and proc.aname[2] = systemd", ctx)
    assert holds("proc.aname in (sshd, nginx)", ctx)
    assert holds("proc.aname startswith ngi", ctx)
    assert holds("proc.aexepath = /usr/sbin/nginx", ctx)
    assert holds("proc.aexepath[2] = /usr/lib/systemd/systemd", ctx)
    assert holds("proc.apid = 800", ctx)
    assert holds("proc.acmdline contains 'daemon off'", ctx)
    assert holds("proc.aexe[1] = nginx", ctx)
    assert not holds("proc.aname = systemd and proc.aname[3] exists", ctx)
    assert holds("proc.aname != nginx", ctx)  # any ancestor differs (systemd)


def test_transformers() -> None:
    ctx = open_ctx("/tmp/EVIL.SH")
    assert holds("tolower(fd.name) = /tmp/evil.sh", ctx)
    assert holds("toupper(fd.filename) = EVIL.SH", ctx)
    assert holds("basename(fd.name) = EVIL.SH", ctx)
    assert holds("len(fd.name) = 12", ctx)
    assert holds("len(fd.name) > 5", ctx)
    assert holds("tolower(basename(fd.name)) endswith .sh", ctx)
    assert not holds("b64(fd.nameraw) exists", open_ctx("/tmp/x", raw="a"))  # not base64: missing, no error
    enc = open_ctx("/tmp/x", raw="aWQ7IHVuYW1l")
    assert holds("b64(fd.nameraw) contains uname", enc)
    assert holds("tolower(proc.aname) = nginx", exec_ctx())


def test_val_compares_two_fields() -> None:
    ctx = exec_ctx()
    assert holds("proc.name = val(proc.aname[0])", ctx)
    assert not holds("proc.name = val(proc.pname)", ctx)
    assert holds("proc.name != val(proc.pname)", ctx)
    assert holds("proc.pid > val(proc.ppid)", ctx)
    assert holds("proc.cmdline contains val(proc.name)", ctx)
    assert holds("proc.aname = val(proc.pname)", ctx)
    assert not holds("proc.name = val(fd.name)", ctx)  # missing on the right: false


def test_event_types() -> None:
    assert holds("evt.type = execve", exec_ctx())
    assert holds("evt.type in (execve, execveat)", exec_ctx())
    assert holds("evt.type = execveat", exec_ctx(flags=4))
    assert not holds("evt.type = execve", exec_ctx(flags=4))
    read = open_ctx("/etc/hosts")
    assert holds("evt.type = open", read) and holds("evt.type = openat", read)
    assert not holds("evt.type = openat2", read)
    assert holds("evt.type = openat2", open_ctx("/etc/hosts", evflags=8))
    assert holds("evt.type = creat", open_ctx("/tmp/x", 0o1101, evflags=16))
    assert holds("evt.type = connect", connect_ctx())
    assert holds("evt.type != connect", read)
    assert holds("evt.dir = <", read)
    assert holds("evt.res = SUCCESS", read)
    assert holds("evt.res = ENOENT", open_ctx("/nope", ret=-2))
    assert holds("evt.res = EINPROGRESS", connect_ctx(ret=-115))


def test_open_flags_as_text_and_bits() -> None:
    ctx = open_ctx("/var/log/x", flags=0o1101)  # O_WRONLY|O_CREAT|O_TRUNC
    assert holds("evt.arg.flags contains O_TRUNC", ctx)
    assert holds("evt.arg.flags contains O_WRONLY", ctx)
    assert not holds("evt.arg.flags contains O_RDONLY", ctx)
    assert not holds("evt.arg.flags contains O_APPEND", ctx)
    assert holds("evt.arg.flags contains TRUNC", ctx)  # not a flag name: a text search
    assert holds("evt.arg.flags = O_WRONLY|O_CREAT|O_TRUNC", ctx)
    assert holds("evt.rawarg.flags = 577", ctx)
    tmpfile = open_ctx("/tmp", flags=0o20200002)
    assert not holds("evt.arg.flags contains O_DIRECTORY", tmpfile)
    assert holds("evt.arg.flags contains O_TMPFILE", tmpfile)
    assert holds("evt.arg.flags contains O_DIRECTORY", open_ctx("/tmp", flags=0o200000))


@pytest.mark.parametrize(
    ("condition", "code"),
    [
        ("proc.pid > abc", "bad-value"),
        ("proc.pid = 1.5", "bad-value"),
        ("proc.pid in (1, x)", "bad-value"),
        ("evt.failed = maybe", "bad-value"),
        ("fd.sip = 999.1.1.1", "bad-value"),
        ("fd.snet in (notanet)", "bad-value"),
        ("proc.name regex '(unclosed'", "bad-value"),
        ("fd.name bcontains zz", "bad-value"),
        ("proc.name > 5", "bad-operator"),
        ("proc.pid contains 5", "bad-operator"),
        ("evt.failed startswith t", "bad-operator"),
        ("fd.sip startswith 10", "bad-operator"),
        ("tolower(proc.pid) = 1", "bad-operator"),
        ("proc.name glob val(proc.pname)", "bad-operator"),
        ("proc.name = val(proc.pid)", "bad-value"),
        ("proc.nme = x", "unknown-field"),
        ("proc.name[1] = x", "bad-value"),
        ("proc.aname[x] = y", "bad-value"),
        ("proc.aname[-1] = y", "bad-value"),
    ],
)
def test_compile_errors(condition: str, code: str) -> None:
    res = load_text(rule_yaml("evt.type = execve and " + condition), "t.yaml")
    assert refused(res) == ["r"]
    assert [d.code for d in errors(res.diagnostics)] == [code]


def test_unix_sockets_and_other_events() -> None:
    unix = connect_ctx("/run/docker.sock", 0, family=AF_UNIX, sock_type=1)
    assert holds("fd.name = /run/docker.sock and fd.typechar = u and fd.sockfamily = unix", unix)
    assert not holds("fd.sip exists", unix)
    assert not holds("fd.l4proto exists", unix)
    fork = exec_ctx()
    fork.ev.type = EventType.FORK
    assert holds("evt.type = clone", fork)
    assert holds("evt.type in (fork, vfork)", fork)
