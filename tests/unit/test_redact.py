"""Redaction of command lines: the built-in set catches what it promises and leaves look-alikes alone, argv
and the joined command line agree, operator patterns work, and hostile input neither raises nor runs long."""

from __future__ import annotations

import re
import time

import pytest

from sentinel.redact import REDACTED, SCAN_LIMIT, Redactor

R = Redactor()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prog --password hunter2 -v", "prog --password [REDACTED] -v"),
        ("prog --password=hunter2", "prog --password=[REDACTED]"),
        ("prog --db-password 'two words' x", "prog --db-password [REDACTED] x"),
        ("kubectl --token=abc.def get pods", "kubectl --token=[REDACTED] get pods"),
        ("app --client-secret s3 --api-key k9", "app --client-secret [REDACTED] --api-key [REDACTED]"),
        ("PGPASSWORD=pw psql -h db", "PGPASSWORD=[REDACTED] psql -h db"),
        (
            "env MYSQL_PWD=pw DB_PASS=x GITHUB_TOKEN=t run",
            "env MYSQL_PWD=[REDACTED] DB_PASS=[REDACTED] GITHUB_TOKEN=[REDACTED] run",
        ),
        ("AWS_SECRET_ACCESS_KEY=abc/def aws s3 ls", "AWS_SECRET_ACCESS_KEY=[REDACTED] aws s3 ls"),
        (
            "java -Djavax.net.ssl.keyStorePassword=changeit -jar a.jar",
            "java -Djavax.net.ssl.keyStorePassword=[REDACTED] -jar a.jar",
        ),
        ("mysql -u root -phunter2 shop", "mysql -u root -p[REDACTED] shop"),
        (
            "/usr/bin/mysqldump -uroot -pPw1 --all-databases",
            "/usr/bin/mysqldump -uroot -p[REDACTED] --all-databases",
        ),
        ("sshpass -p hunter2 ssh -p 2222 host", "sshpass -p [REDACTED] ssh -p 2222 host"),
        ("sshpass -p 'a b' ssh host", "sshpass -p [REDACTED] ssh host"),
        ("curl -u bob:pw https://x/", "curl -u bob:[REDACTED] https://x/"),
        ("curl -ubob:pw https://x/", "curl -ubob:[REDACTED] https://x/"),
        ("docker login -u me -p tok registry.example", "docker login -u me -p [REDACTED] registry.example"),
        ("openssl enc -aes256 -pass pass:foo -in f", "openssl enc -aes256 -pass [REDACTED] -in f"),
        (
            "curl -H 'Authorization: Bearer eyJhbGc.x.y' https://api/",
            "curl -H 'Authorization: Bearer [REDACTED]' https://api/",
        ),
        ("curl -H 'X-Api-Key: k123' h", "curl -H 'X-Api-Key: [REDACTED]' h"),
        ("git clone https://bob:pw@git.example/r.git", "git clone https://bob:[REDACTED]@git.example/r.git"),
        ("wget ftp://u:p@ss@host/f", "wget ftp://u:[REDACTED]@host/f"),
        ("curl 'https://h/cb?user=a&password=pw&x=1'", "curl 'https://h/cb?user=a&password=[REDACTED]&x=1'"),
        ("aws configure AKIAIOSFODNN7EXAMPLE", "aws configure [REDACTED]"),
        (
            "git push https://ghp_0123456789abcdefghijklmnopqrstuvwxyzAB@github.com/o/r",
            "git push https://[REDACTED]@github.com/o/r",
        ),
        (
            'curl -d \'{"password": "pw", "user": "a"}\' h',
            'curl -d \'{"password": "[REDACTED]", "user": "a"}\' h',
        ),
        (
            "echo '-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----' > k",
            "echo '-----BEGIN OPENSSH PRIVATE KEY-----[REDACTED]-----END OPENSSH PRIVATE KEY-----' > k",
        ),
        ("echo -----BEGIN RSA PRIVATE KEY----- MIIE", "echo -----BEGIN RSA PRIVATE KEY-----[REDACTED]"),
    ],
)
def test_builtin_catches(text: str, expected: str) -> None:
    assert R.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "ssh -p 2222 root@host",  # -p is a port for most programs
        "mysql -p shop",  # mysql -p prompts; shop is the database
        "nc -p 4444 -l",
        "psql --password-stdin",
        "app --token-ttl 60 --secret-name db --password-file /run/pw",
        "OLDPWD=/home/a PWD=/tmp PASSWORD_MIN_LEN=8 bypass=1",
        "ssh -o PasswordAuthentication=no -o PubkeyAuthentication=yes h",
        "wget --no-password ftp://host/f",
        "ls -la /etc/passwd /etc/shadow",
        "grep -ri password /etc",
        "git clone git@github.com:o/r.git ssh://root@10.0.0.1/x",
        "python3 -c 'import os; print(os.environ)'",
        "echo $PASSWORD",
        "curl https://example.com/path?q=token",
        "cat /root/.aws/credentials",
        "",
    ],
)
def test_builtin_leaves_look_alikes(text: str) -> None:
    assert R.redact(text) is text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["prog", "--password", "two words"], ["prog", "--password", REDACTED]),
        (["env", "PASSWORD=a b&c", "cmd"], ["env", f"PASSWORD={REDACTED}", "cmd"]),
        (
            ["sshpass", "-p", "-dash-start", "ssh", "-p", "22", "h"],
            ["sshpass", "-p", REDACTED, "ssh", "-p", "22", "h"],
        ),
        (["sh", "-c", "mysql -pS3 db"], ["sh", "-c", f"mysql -p{REDACTED} db"]),
        (["mysql", "-pS3", "db"], ["mysql", f"-p{REDACTED}", "db"]),
        (["curl", "-u", "bob:pw", "https://h"], ["curl", "-u", f"bob:{REDACTED}", "https://h"]),
        (
            ["curl", "-H", "Authorization: Bearer abc", "h"],
            ["curl", "-H", f"Authorization: Bearer {REDACTED}", "h"],
        ),
        (
            ["echo", "-----BEGIN", "PRIVATE", "KEY-----", "AAA", "BBB"],
            ["echo", "-----BEGIN", "PRIVATE", "KEY-----", REDACTED, REDACTED],
        ),
        (["prog", "--password"], ["prog", "--password"]),
        (["prog", "--password", "--verbose"], ["prog", "--password", "--verbose"]),
        (["ls", "-l"], ["ls", "-l"]),
    ],
)
def test_redact_args(args: list[str], expected: list[str]) -> None:
    assert R.redact_args(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["prog", "--password", "two words", "x"],
        ["curl", "-H", "Authorization:", "Bearer", "tok123", "https://h"],
        ["docker", "login", "-p", "tok", "reg"],
        ["bash", "-c", "PGPASSWORD='a b' psql; mysql -pX db"],
        ["git", "clone", "https://u:pw@h/r"],
        ["x", "AKIAIOSFODNN7EXAMPLE"],
    ],
)
def test_args_and_joined_command_line_agree(args: list[str]) -> None:
    """What redact() hides in the joined command line is hidden in the argv too (ECS command_line is the
    argv joined by spaces), and the argv keeps its length."""
    redacted = R.redact_args(args)
    assert len(redacted) == len(args)
    joined = " ".join(redacted)
    assert R.redact(joined) == joined  # nothing left that the text form would catch
    from_text = R.redact(" ".join(args))
    for secret in ("two words", "tok123", "tok", "a b", "pw", "AKIAIOSFODNN7EXAMPLE", "X db"):
        if secret not in from_text:
            assert secret not in joined.replace(REDACTED, "")


def test_operator_patterns_whole_match_or_secret_group() -> None:
    red = Redactor(
        [re.compile(r"corp_[a-z0-9]{8}"), re.compile(r"--vault-key[= ](?P<secret>\S+)")], builtin=False
    )
    assert red.redact("a corp_abcd1234 b") == "a [REDACTED] b"
    assert (
        red.redact("v --vault-key=xyz --vault-key abc") == "v --vault-key=[REDACTED] --vault-key [REDACTED]"
    )
    assert red.redact("PASSWORD=x") == "PASSWORD=x"  # builtin off
    # a pattern spanning arguments is applied to the joined command line too
    assert red.redact_args(["v", "--vault-key", "abc"]) == ["v", "--vault-key", REDACTED]
    # anchors work per argument
    anchored = Redactor([re.compile(r"^sk_live_\w+$")], builtin=False)
    assert anchored.redact_args(["stripe", "sk_live_abc"]) == ["stripe", REDACTED]


def test_zero_width_operator_pattern_redacts_nothing() -> None:
    red = Redactor([re.compile(r"(?=x)")], builtin=False)
    assert red.redact("xxx") == "xxx"


def test_no_patterns_is_a_fast_no_op() -> None:
    off = Redactor([], builtin=False)
    assert not off.active
    text, args = "PASSWORD=x", ["--password", "x"]
    assert off.redact(text) is text and off.redact_args(args) is args
    start = time.perf_counter()
    for _ in range(100_000):
        off.redact_args(args)
    assert time.perf_counter() - start < 0.5


def test_nothing_found_returns_the_input() -> None:
    args = ["ls", "-la", "/tmp"]
    assert R.redact_args(args) is args


# ---- hostile input -----------------------------------------------------------------------------------


def test_surrogate_escaped_bytes() -> None:
    text = "prog --password h\udcffnter \udc80\udcfe"
    assert R.redact(text) == "prog --password [REDACTED] \udc80\udcfe"
    assert R.redact_args(["\udcff", "--password", "\udcfe\udcfe"]) == ["\udcff", "--password", REDACTED]
    # bytes (as a decoder may hand over) are decoded like the sensor does, never rejected
    assert R.redact_args([b"--password", b"\xff\xfe"]) == ["--password", REDACTED]  # type: ignore[list-item]
    assert R.redact(b"PASSWORD=\xff") == "PASSWORD=[REDACTED]"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000,
        "--password " * 20_000,
        "-" * 100_000,
        "PASSWORD=" * 20_000,
        "http://a:" + "@" * 100_000,
        "a://b:" * 20_000,
        "-----BEGIN PRIVATE KEY-----" + "x" * 100_000,
        "'" * 100_000,
        "mysql " + "-p " * 30_000,
        "sshpass -p " * 20_000,
        "\x00\x1b[31m\udcff" * 30_000,
        "x=" + "=" * 100_000,
        '"password":"' + "\\" * 100_000,
        "pass." * 13_000,  # a URL scheme scan from every "a." start was quadratic
        "a." * 32_768,
        "a-" * 32_768,
        "curl -uAuthorization:" * 3_000,
    ],
)
def test_hostile_input_is_bounded_and_never_raises(text: str) -> None:
    start = time.perf_counter()
    out = R.redact(text)
    args_out = R.redact_args(text.split(" ")[:5000])
    assert time.perf_counter() - start < 3.0
    assert isinstance(out, str) and isinstance(args_out, list)
    if len(text) > SCAN_LIMIT:
        assert out.endswith(f"[REDACTED: {len(text) - SCAN_LIMIT} characters not scanned]") or REDACTED in out


def test_text_beyond_the_scan_limit_is_not_passed_through() -> None:
    secret_far = "x" * SCAN_LIMIT + " PASSWORD=leak"
    out = R.redact(secret_far)
    assert "leak" not in out and out.startswith("x" * 100)
    assert out.endswith(f"[REDACTED: {len(secret_far) - SCAN_LIMIT} characters not scanned]")
    args = ["a" * (SCAN_LIMIT - 2), "PASSWORD=leak", "tail"]
    out_args = R.redact_args(args)
    assert len(out_args) == 3 and out_args[0] == args[0]
    assert "leak" not in "".join(out_args) and out_args[2].startswith("[REDACTED: ")


def test_short_input_is_fully_scanned_at_the_sensor_limit() -> None:
    args = ["x" * 100] * 80 + ["--password", "secret"]  # well past the sensor's 8 KiB argv capture
    assert R.redact_args(args)[-1] == REDACTED


def test_internal_failure_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    red = Redactor()

    def boom(_text: str) -> list[tuple[int, int, str]]:
        raise RuntimeError("bug")

    monkeypatch.setattr(red, "_text_spans", boom)
    assert red.redact("PASSWORD=x") == REDACTED
    assert red.redact_args(["--password", "b"]) == [REDACTED, REDACTED]
    assert red.redact_args(["a", "b"]) == ["a", "b"]  # the prefilter alone clears it: no internals run
