"""Image references split into repository, tag and digest: the tricky forms, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sentinel.containers.image_ref import DEFAULT_TAG, ImageRef, image_id_hex, parse_image_ref

D = "sha256:" + "0123456789abcdef" * 4
HEX = "f" * 64

VALID = [
    # plain names: no tag means the runtime pulled :latest
    ("nginx", ImageRef("nginx", DEFAULT_TAG)),
    ("nginx:1.25", ImageRef("nginx", "1.25")),
    ("library/nginx:1.25-alpine", ImageRef("library/nginx", "1.25-alpine")),
    ("docker.io/library/nginx:latest", ImageRef("docker.io/library/nginx", "latest")),
    # a registry with a port: the colon before the last slash is the port's, never a tag
    ("localhost:5000/a/b:tag", ImageRef("localhost:5000/a/b", "tag")),
    ("localhost:5000/a/b", ImageRef("localhost:5000/a/b", DEFAULT_TAG)),
    ("registry.example.com:5000/team/app", ImageRef("registry.example.com:5000/team/app", DEFAULT_TAG)),
    ("localhost/app", ImageRef("localhost/app", DEFAULT_TAG)),  # podman build's default
    ("[::1]:5000/app:v1", ImageRef("[::1]:5000/app", "v1")),
    # a bare first component without a dot or colon is a path, not a registry; with upper case, a registry
    ("Registry/app:v1", ImageRef("Registry/app", "v1")),
    # digests: pinned by digest only has no tag; a tag and a digest keep both
    (f"nginx@{D}", ImageRef("nginx", "", D)),
    (f"nginx:1.25@{D}", ImageRef("nginx", "1.25", D)),
    (f"localhost:5000/a/b:tag@{D}", ImageRef("localhost:5000/a/b", "tag", D)),
    (f"localhost:5000/a/b@{D}", ImageRef("localhost:5000/a/b", "", D)),
    # separators inside path components
    ("a__b/c.d-e---f:T_1.x-y", ImageRef("a__b/c.d-e---f", "T_1.x-y")),
    ("localhost:5000", ImageRef("localhost", "5000")),  # no slash: a name and a tag, as Docker reads it
    # image ids
    (f"sha256:{HEX}", ImageRef(id=HEX)),
    (HEX, ImageRef(id=HEX)),
]

INVALID = [
    "",
    " nginx",
    "nginx ",
    "nginx\n",
    "Nginx",  # upper case in a path
    "library/Nginx:1",
    "nginx:",  # empty tag
    "nginx:-1",  # a tag cannot start with '-'
    "nginx:" + "t" * 129,  # a tag is at most 128 characters
    "nginx@",
    "nginx@sha256:abc",  # a digest has at least 32 hex digits
    "@" + D,
    ":tag",
    "a//b",
    "a/b/",
    "/a",
    "a:b:c",
    "a/b:c:d",
    "-a",
    "a-",
    "a..b",
    "a___b",
    "localhost:port/a",
    "host:5000:6000/a",
    "x" * 256,  # a name is at most 255 characters
    "a" * 2000,
    "nginx\x00:1",
    "nginx:1\u00e9",
    "ngin\u0445",  # a Cyrillic letter that looks Latin
    "\ud800",
    "name@sha256:" + "g" * 64,
    f"nginx@{D}@{D}",
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid(text: str, expected: ImageRef) -> None:
    assert parse_image_ref(text) == expected


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    assert parse_image_ref(text) is None


def test_short_sha_is_a_name_and_tag_as_docker_reads_it() -> None:
    # Not 64 digits, so not an id: Docker's grammar reads "sha256" tagged with the hex. Nothing guesses more.
    assert parse_image_ref(f"sha256:{HEX[:-1]}") == ImageRef("sha256", HEX[:-1])


def test_image_id_hex() -> None:
    assert image_id_hex(f"sha256:{HEX}") == HEX
    assert image_id_hex(HEX) == HEX
    assert image_id_hex(HEX.upper()) == ""
    assert image_id_hex(f"sha512:{HEX}") == ""
    assert image_id_hex("") == ""
    assert image_id_hex("x" * 10_000) == ""


@given(st.text(max_size=300))
def test_any_text_parses_or_is_refused(text: str) -> None:
    ref = parse_image_ref(text)
    if ref is not None:  # every part came from the text, in order
        assert ref.repository in text and ref.digest in text and (ref.tag in text or ref.tag == DEFAULT_TAG)


@given(
    st.sampled_from(["", "localhost/", "localhost:5000/", "reg.io/", "reg.io:443/ns/"]),
    st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+){0,2}(?:/[a-z0-9]+){0,2}", fullmatch=True),
    st.sampled_from(["", ":v1", ":1.2.3-rc_1"]),
    st.sampled_from(["", "@" + D]),
)
def test_built_references_round_trip(domain: str, path: str, tag: str, digest: str) -> None:
    assume(not image_id_hex(domain + path + tag + digest))  # 64 hex digits alone are an id
    ref = parse_image_ref(domain + path + tag + digest)
    assert ref is not None
    assert ref.repository == domain + path
    assert ref.tag == (tag[1:] if tag else ("" if digest else DEFAULT_TAG))
    assert ref.digest == digest[1:]
