"""Secrets out of command lines before alerts leave the host.

A SIEM is read by more people than the host's root, and command lines carry passwords (``mysql -pX``,
``curl -u user:pass``, ``PGPASSWORD=x psql``), tokens (``Authorization: Bearer …``) and keys. The
:class:`Redactor` replaces the secret part of such text with ``[REDACTED]`` and keeps the rest (the flag, the
variable name, the user, the host), so the alert still says *what* happened.

Two sources of patterns:

- the operator's regexes (``redact:`` in the config): the whole match is replaced, or only the named group
  ``secret`` when the pattern has one (``--db-key[= ](?P<secret>\\S+)``);
- the built-in set (``redact_builtin: true``), deliberately conservative: a false positive destroys
  evidence, so each rule needs a clear marker of a secret (a secret-named option or variable, a known
  program's password flag, a credential-shaped token). See :data:`BUILTIN_DESCRIPTION`.

``redact_args`` works on an argv: each argument on its own (so a secret that is a whole argument after
``--password`` is caught, with its spaces), and the joined command line (so a secret split over
arguments, or a pattern spanning them, is caught too); ``" ".join(redact_args(a))`` never shows what
``redact(" ".join(a))`` would hide, and the ECS ``process.command_line`` (``shlex.join`` of the same redacted
arguments) only adds quotes around them.

Work is bounded: only the first :data:`SCAN_LIMIT` characters are scanned, and whatever lies beyond is
replaced by a marker saying how much was not scanned (fail closed: text that was not looked at cannot be
vouched for). The sensor captures at most 8 KiB of argv, so in the agent everything is always scanned. The
methods never raise: on an internal failure the text is replaced whole (again failing closed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence

REDACTED = "[REDACTED]"
SCAN_LIMIT = 64 * 1024  # characters scanned per text / per joined command line

BUILTIN_DESCRIPTION = (
    "options and variables named like a secret (--password X, --db-password=X, PGPASSWORD=X, MYSQL_PWD=X, "
    'api_key=X, *_TOKEN=X, *_SECRET=X, JSON "password": "X"); mysql/mariadb -pX; sshpass -p X; '
    "curl -u user:X; docker/podman login -p X; openssl -pass pass:X; Authorization/X-Api-Key headers; "
    "URL user:X@; AWS access key ids (AKIA…/ASIA…); GitHub tokens (ghp_…); private key blocks"
)

# A name counts as secret when it *ends* in one of these (so PASSWORD_FILE, --token-ttl, OLDPWD do not).
_KW = (
    r"(?:pass(?:word|wd|phrase)|(?<![a-z0-9])pass|secret|token|api[-_]?key|access[-_]?key|secret[-_]?key"
    r"|[a-z0-9]_pwd)"
)
_VALUE = r"(?:'[^']*'|\"[^\"]*\"|[^\s&]+)"

_OPT_PAIR = re.compile(rf"(?i)(?<![\w.-])-{{1,2}}(?!-|no-)[\w.-]*?{_KW}[ \t]+(?P<secret>(?!-){_VALUE})")
_ASSIGN = re.compile(rf"(?i)(?<![\w.-])[\w.-]*?{_KW}=(?P<secret>{_VALUE})")
_JSON = re.compile(rf"(?i)\\?\"[\w.-]*?{_KW}\\?\"\s*:\s*\\?\"(?P<secret>[^\"\\]+)")
_HEADER = re.compile(
    r"(?i)(?<![\w-])(?:(?:proxy-)?authorization|x-api-key|api-key|x-auth-token|private-token|x-vault-token)"
    r"\s*:\s*(?:(?:bearer|basic|token|splunk|apikey|key|digest|negotiate|ntlm)\s+)?(?P<secret>[^\s'\"]+)"
)
# The scheme starts where no scheme character precedes it and is bounded: ``a.a.a.…`` stays linear.
_URL_CREDENTIALS = re.compile(
    r"(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{0,31}://[^\s/?#@:]*:(?P<secret>[^\s/?#]+)@"
)
_OPENSSL_PASS = re.compile(r"(?<![\w-])-pass(?:in|out)?\s+pass:(?P<secret>\S+)")
_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?P<secret>(?:AKIA|ASIA)[A-Z0-9]{16})(?![A-Z0-9])")
_GITHUB_TOKEN = re.compile(r"(?<![A-Za-z0-9_])(?P<secret>gh[pousr]_[A-Za-z0-9]{36,255})")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?P<secret>.+?)"
    r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
BUILTIN_PATTERNS: tuple[re.Pattern[str], ...] = (
    _PRIVATE_KEY, _HEADER, _URL_CREDENTIALS, _OPENSSL_PASS, _OPT_PAIR, _ASSIGN, _JSON, _AWS_KEY_ID,
    _GITHUB_TOKEN,
)  # fmt: skip
# Cheap test before the built-in patterns: text whose lower-case form holds none of these cannot match one of
# them (nor a program rule). Substring tests on the lowered text: ~10x faster than one case-insensitive
# regex alternation, which Python's engine cannot prefilter.
_KEYWORDS = ("pass", "secret", "token", "key", "_pwd")  # what every name in _KW ends with (lower case)
_PROGRAMS_SEEN = ("mysql", "mariadb", "sshpass", "curl", "login")  # what every program rule needs
_TRIGGERS = (*_KEYWORDS, "authoriz", "://", "-----begin", "akia", "asia", "gh", *_PROGRAMS_SEEN)


def _may_hold_secret(lower: str) -> bool:
    return any(k in lower for k in _TRIGGERS)


def _has_keyword(lower: str) -> bool:
    return any(k in lower for k in _KEYWORDS)


# Each built-in pattern with a necessary condition for it to match, cheaper than running it: most command
# lines that pass the prefilter (a "key" or "token" somewhere) need two or three patterns, not nine.
_GATED_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[str, str], bool]], ...] = (
    (_PRIVATE_KEY, lambda t, low: "-----BEGIN" in t),
    (_HEADER, lambda t, low: "authorization" in low or "api-key" in low or "-token" in low),
    (_URL_CREDENTIALS, lambda t, low: "://" in t),
    (_OPENSSL_PASS, lambda t, low: "-pass" in t),
    (_OPT_PAIR, lambda t, low: _has_keyword(low)),
    (_ASSIGN, lambda t, low: "=" in t and _has_keyword(low)),
    (_JSON, lambda t, low: '"' in t and _has_keyword(low)),
    (_AWS_KEY_ID, lambda t, low: "AKIA" in t or "ASIA" in t),
    (_GITHUB_TOKEN, lambda t, low: "gh" in t and "_" in t),
)
assert {p for p, _ in _GATED_PATTERNS} == set(BUILTIN_PATTERNS)

# Whole-argument forms (argv mode): ``--password`` then the next argument; ``NAME=value`` whole.
_OPT_NAME = re.compile(rf"(?i)-{{1,2}}(?!-|no-)[\w.-]*?{_KW}")
_ASSIGN_NAME = re.compile(rf"(?i)[\w.-]*?{_KW}=")

_MYSQL = frozenset(
    ("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck", "mysqlpump",
     "mysqlbinlog", "mysqlslap", "mariadb", "mariadb-dump", "mariadb-admin", "mariadb-import",
     "mariadb-show", "mariadb-check", "mariadb-binlog", "mariadb-slap")
)  # fmt: skip
_LOGIN_TOOLS = frozenset(("docker", "podman", "buildah", "skopeo", "nerdctl", "helm"))
_PROGRAMS = {**{p: "mysql" for p in _MYSQL}, **{p: "login" for p in _LOGIN_TOOLS}}
_PROGRAMS.update(sshpass="sshpass", curl="curl")
_SEPARATORS = frozenset((";", "|", "||", "&", "&&", "(", ")"))
_TEXT_TOKEN = re.compile(r"\S+")

Span = tuple[int, int, str]  # start, end, replacement


class Redactor:
    """Replaces secrets in command lines with ``[REDACTED]``; a no-op (the input returned as is) when it has
    no patterns and the built-in set is off."""

    def __init__(self, patterns: Sequence[re.Pattern[str]] = (), builtin: bool = True) -> None:
        self.patterns = list(patterns)
        self.builtin = builtin
        self.active = bool(self.patterns) or builtin

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced; the same object when nothing was found."""
        if not self.active:
            return text
        try:
            text = _as_text(text)
            head = text[:SCAN_LIMIT]
            spans = self._text_spans(head)
            if len(text) > SCAN_LIMIT:
                spans.append((len(head), len(text), _unscanned(len(text) - len(head))))
            return apply_spans(text, merge_spans(spans)) if spans else text
        except Exception:  # never let a redaction bug leak the text or stop the alert
            return REDACTED

    def redact_args(self, args: Sequence[str]) -> list[str]:
        """An argv with every secret replaced, argument by argument (the count is kept); ``args`` itself when
        nothing was found."""
        if not self.active or not args:
            return args if isinstance(args, list) else list(args)
        try:
            return self._redact_args([_as_text(a) for a in args], args)
        except Exception:  # fail closed, as in redact()
            return [REDACTED for _ in args]

    # ---- internals -------------------------------------------------------------------------------------

    def _redact_args(self, items: list[str], original: Sequence[str]) -> list[str]:
        offsets: list[int] = []
        pos = 0
        for item in items:
            offsets.append(pos)
            pos += len(item) + 1
        joined = " ".join(items)
        scanned = min(len(joined), SCAN_LIMIT)
        if not self.patterns and len(joined) <= SCAN_LIMIT and not _may_hold_secret(joined.lower()):
            # Nothing a built-in pattern or program rule needs is in the whole line (the prefilter names
            # every keyword and program they depend on): the common case, one search instead of dozens.
            return original if isinstance(original, list) else items
        spans: list[Span] = []
        tokens: list[tuple[int, int]] = []
        for item, start in zip(items, offsets, strict=True):
            if start >= scanned:
                break
            end = min(start + len(item), scanned)
            tokens.append((start, end))
            spans.extend((start + s, start + e, r) for s, e, r in self._text_spans(item[: end - start]))
        if self.builtin:
            spans.extend(_program_spans(joined, tokens, whole=True))
        spans.extend(self._text_spans(joined[:scanned]))
        if len(joined) > scanned:
            spans.append((scanned, len(joined), ""))  # filled per argument below
        if not spans:
            return original if isinstance(original, list) else items
        merged = merge_spans(spans)
        out: list[str] = []
        k = 0
        for item, start in zip(items, offsets, strict=True):
            end = start + len(item)
            while k < len(merged) and merged[k][1] <= start:
                k += 1
            local: list[Span] = []
            j = k
            while j < len(merged) and merged[j][0] < end:
                s, e, rep = merged[j]
                s, e = max(s, start) - start, min(e, end) - start
                if s < e:
                    local.append((s, e, rep or _unscanned(e - s)))
                j += 1
            out.append(apply_spans(item, local) if local else item)
        return out

    def _text_spans(self, text: str) -> list[Span]:
        spans: list[Span] = []
        if not text:
            return spans
        for pattern in self.patterns:
            spans.extend(_match_spans(pattern, text))
        if not self.builtin:
            return spans
        lower = text.lower()
        if _may_hold_secret(lower):
            for pattern, needed in _GATED_PATTERNS:
                if needed(text, lower):
                    spans.extend(_match_spans(pattern, text))
            if any(p in lower for p in _PROGRAMS_SEEN):
                tokens = [m.span() for m in _TEXT_TOKEN.finditer(text)]
                spans.extend(_program_spans(text, tokens, whole=False))
        return spans


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return os.fsdecode(bytes(value))
    return str(value)


def _unscanned(n: int) -> str:
    return f"[REDACTED: {n} characters not scanned]"


def _match_spans(pattern: re.Pattern[str], text: str) -> Iterable[Span]:
    group = "secret" if "secret" in pattern.groupindex else 0
    for m in pattern.finditer(text):
        s, e = m.span(group)
        if s < e:  # zero-width matches and empty groups hide nothing
            yield s, e, REDACTED


def merge_spans(spans: list[Span]) -> list[Span]:
    """Sorted; overlapping or touching spans with the same marker joined (one marker where secrets meet)."""
    spans.sort()
    out: list[Span] = []
    for s, e, rep in spans:
        if out and s <= out[-1][1] and rep == out[-1][2]:
            out[-1] = (out[-1][0], max(out[-1][1], e), rep)
        else:
            out.append((s, e, rep))
    return out


def apply_spans(text: str, spans: list[Span]) -> str:
    parts: list[str] = []
    pos = 0
    for s, e, rep in spans:
        if s < pos:  # overlap left after merging (different markers): keep the first
            s = pos
            if s >= e:
                continue
        parts.append(text[pos:s])
        parts.append(rep)
        pos = e
    parts.append(text[pos:])
    return "".join(parts)


def _program_name(token: str) -> str:
    return token.lstrip("'\"($`").rstrip("'\"").rpartition("/")[2]


def _value_end(text: str, start: int, end: int, whole: bool) -> int:
    """Where a secret value starting at ``start`` ends: its token's end, or in a command line (not argv) the
    closing quote when the value opens a quote the token does not close (``-p 'a b'``)."""
    if whole or start >= end or text[start] not in "'\"":
        return end
    close = text.find(text[start], start + 1)
    return end if close < 0 or close < end else close + 1


def _program_spans(text: str, tokens: list[tuple[int, int]], whole: bool) -> list[Span]:
    """Secrets that depend on the program or on argument boundaries: ``mysql -pX``, ``sshpass -p X``,
    ``curl -u user:X``, ``docker login -p X``; with ``whole`` (argv), also ``--password X`` with X a whole
    argument (spaces included) and ``NAME=value`` with the whole value."""
    spans: list[Span] = []
    program: str | None = None
    login = False
    expect: str | None = None
    skip_until = 0

    def secret(start: int, end: int) -> None:
        nonlocal skip_until
        end = _value_end(text, start, end, whole)
        if start < end:
            spans.append((start, end, REDACTED))
            skip_until = end

    for s, e in tokens:
        if s < skip_until:
            continue  # inside a quoted secret already redacted
        tok = text[s:e]
        if expect is not None:
            kind, expect = expect, None
            if kind == "userpass":
                colon = tok.find(":")
                if 0 <= colon < len(tok) - 1:
                    secret(s + colon + 1, e)
                continue
            if kind == "any" or (kind == "secret" and tok and not tok.startswith("-")):
                secret(s, e)
                continue
            if kind == "skip":
                continue
        if tok in _SEPARATORS or tok.endswith((";", "|", "&&")):
            program, login = None, False
            continue
        name = _program_name(tok)
        if name in _PROGRAMS:
            program, login = _PROGRAMS[name], False
            continue
        if whole:
            if _OPT_NAME.fullmatch(tok):
                expect = "secret"
                continue
            m = _ASSIGN_NAME.match(tok)
            if m is not None and m.end() < len(tok):
                secret(s + m.end(), e)
                continue
        if program == "mysql":
            if tok.startswith("-p") and len(tok) > 2:  # -pSECRET; "-p X" prompts, X is the database
                secret(s + 2, e)
        elif program == "sshpass":
            if tok == "-p":
                expect = "any"  # sshpass -p takes the next argument whatever it looks like
            elif tok.startswith("-p"):
                secret(s + 2, e)
            elif tok in ("-f", "-d", "-P"):
                expect = "skip"
            elif not tok.startswith("-"):
                program = None  # the command sshpass runs: its own -p is not sshpass's
        elif program == "curl":
            if tok in ("-u", "--user", "-U", "--proxy-user"):
                expect = "userpass"
            elif tok.startswith(("-u", "-U")) and len(tok) > 2 and not tok.startswith("--"):
                colon = tok.find(":")
                if 2 < colon < len(tok) - 1:
                    secret(s + colon + 1, e)
        elif program == "login":
            if tok == "login":
                login = True
            elif login and tok == "-p":
                expect = "any"
            elif login and tok.startswith("-p") and len(tok) > 2 and not tok.startswith("--"):
                secret(s + 2, e)
    return spans
