"""The native protobuf wire path against protobuf itself and against the dict row path.

``FeaturePlan.decode_score_requests`` must read ``ScoreRequest`` / ``ScoreBatchRequest`` bytes as
protobuf does (defaults, last-one-wins, merged messages, last map entry wins, unknown fields
skipped, bad UTF-8 rejected) and give the matrix and violations ``transform_rows`` gives for the
same maps. Requests are built here byte by byte (so the wire order of every field is known) and
checked against ``pb.ScoreBatchRequest.FromString``; the reference dicts are built in wire order,
which is the order a Python dict built from the entries has. (Encoding is tested in Rust against
prost, and by every end-to-end test, whose client parses the answers with protobuf.)
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from feature_kernels import FeaturePipeline, load_spec
from scoring_server.grpc._proto import scoring_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
SPECS = ("gmsc", "german_credit")
NAN = float("nan")
I32_MIN, I32_MAX = -(2**31), 2**31 - 1

Violations = list[tuple[str, str]]
Decoded = tuple[list[str], list[str], list[bool], npt.NDArray[np.float32], list[Violations]]


# --------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class Input:
    name: str
    kind: str
    lo: float | None
    hi: float | None
    missing_codes: tuple[float, ...]
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Model:
    pipeline: FeaturePipeline
    numeric: tuple[Input, ...]
    categorical: tuple[Input, ...]

    def decode(self, data: bytes, *, batch: bool) -> Decoded:
        return self.pipeline._plan.decode_score_requests(data, batch)


@cache
def model(name: str) -> Model:
    pipeline = FeaturePipeline(load_spec(ROOT / "specs" / f"{name}.yaml"))
    plan = json.loads(pipeline.spec.plan_json())
    categories: dict[str, list[str]] = {}
    for f in plan["features"]:
        op = f["op"]
        if op["kind"] == "one_hot":
            categories.setdefault(op["input"], []).extend(op["categories"])
        elif op["kind"] == "ordinal":
            categories.setdefault(op["input"], []).extend(op["mapping"])
    inputs = [
        Input(
            d["name"],
            d["kind"],
            d["min"],
            d["max"],
            tuple(d["missing_codes"]),
            tuple(categories.get(d["name"], ())),
        )
        for d in plan["inputs"]
    ]
    return Model(
        pipeline,
        tuple(i for i in inputs if i.kind != "categorical"),
        tuple(i for i in inputs if i.kind == "categorical"),
    )


# --------------------------------------------------------------------------------------------
# A tiny protobuf writer: the tests choose the wire order of every field.


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def tag(field_no: int, wire_type: int) -> bytes:
    return varint((field_no << 3) | wire_type)


def ld(field_no: int, body: bytes) -> bytes:
    return tag(field_no, 2) + varint(len(body)) + body


def double(field_no: int, x: float) -> bytes:
    return tag(field_no, 1) + struct.pack("<d", x)


def utf8(s: str) -> bytes:
    return s.encode()


def unknown_fields(min_field: int) -> st.SearchStrategy[bytes]:
    """One field no message here declares, of any (non-group) wire type."""
    no = st.integers(min_field, 2**29 - 1)
    return st.one_of(
        st.builds(lambda n, v: tag(n, 0) + varint(v), no, st.integers(0, 2**64 - 1)),
        st.builds(lambda n, b: tag(n, 1) + b, no, st.binary(min_size=8, max_size=8)),
        st.builds(lambda n, b: tag(n, 5) + b, no, st.binary(min_size=4, max_size=4)),
        st.builds(ld, no, st.binary(max_size=8)),  # unknown bytes need not be UTF-8
    )


# --------------------------------------------------------------------------------------------
# Requests: wire bytes plus what they mean (the reference).


@dataclass
class Expected:
    request_id: str = ""
    applicant_id: str = ""
    explain: bool = False
    numeric: dict[str, float] = field(default_factory=dict)  # in wire order, last value wins
    categorical: dict[str, str] = field(default_factory=dict)


texts = st.text(max_size=8)
ids = st.one_of(
    st.just(""),
    texts,
    st.text(st.characters(min_codepoint=0x80, exclude_categories=["Cs"]), max_size=4),
)
EDGE_VALUES = (0.0, -0.0, NAN, -NAN, math.inf, -math.inf, 1e308, -1e308, 5e-324, 3.5e38, 0.5)


def numeric_values(m: Model) -> st.SearchStrategy[float]:
    specials = [v for i in m.numeric for v in (i.lo, i.hi, *i.missing_codes) if v is not None]
    return st.one_of(
        st.sampled_from(EDGE_VALUES + tuple(specials)),
        st.integers(-5, 130).map(float),
        st.floats(),
    )


def numeric_keys(m: Model) -> st.SearchStrategy[str]:
    names = [i.name for i in m.numeric]
    wrong_map = [i.name for i in m.categorical]
    return st.one_of(
        st.sampled_from(names),
        st.sampled_from(names),
        *([st.sampled_from(wrong_map)] if wrong_map else []),
        texts,
    )


def categorical_keys(m: Model) -> st.SearchStrategy[str]:
    names = [i.name for i in m.categorical] or ["nothing"]
    return st.one_of(
        st.sampled_from(names),
        st.sampled_from(names),
        st.sampled_from([i.name for i in m.numeric]),
        texts,
    )


def categorical_values(m: Model) -> st.SearchStrategy[str]:
    known = sorted({c for i in m.categorical for c in i.categories}) or ["x"]
    return st.one_of(st.sampled_from(known), st.sampled_from(known), ids)


def valid_value(i: Input) -> st.SearchStrategy[float]:
    lo = i.lo if i.lo is not None else -1e6
    hi = i.hi if i.hi is not None else 1e6
    if i.kind == "integer":
        return st.integers(int(lo), int(min(hi, lo + 200))).map(float)
    return st.floats(lo, min(hi, lo + 1e6))


@st.composite
def entry(
    draw: st.DrawFn, map_no: int, key: str, value_field: bytes, other_value_field: bytes
) -> tuple[bytes, bool, bool, bool]:
    """One map entry of `key` -> value: usually plain, sometimes with the value first, a field
    left out, a field repeated (the last one wins) or an unknown field inside.
    Returns the bytes, whether the key and the value are in them, and whether the entry counts
    (upb keeps an entry with an unknown field as an unknown field of the applicant, off the map).
    """
    style = draw(st.sampled_from(["plain"] * 6 + ["swapped", "no_key", "no_value", "dup", "unk"]))
    k = ld(1, utf8(key))
    if style == "swapped":
        return ld(map_no, value_field + k), True, True, True
    if style == "no_key":
        return ld(map_no, value_field), False, True, True
    if style == "no_value":
        return ld(map_no, k), True, False, True
    if style == "dup":
        other_key = ld(1, utf8(draw(texts)))
        return ld(map_no, other_key + other_value_field + k + value_field), True, True, True
    if style == "unk":
        return ld(map_no, k + draw(unknown_fields(3)) + value_field), True, True, False
    return ld(map_no, k + value_field), True, True, True


@st.composite
def numeric_entry(draw: st.DrawFn, m: Model) -> tuple[str, float, bytes, bool]:
    k, v = draw(numeric_keys(m)), draw(numeric_values(m))
    b, has_key, has_value, kept = draw(entry(2, k, double(2, v), double(2, 1.5)))
    return (k if has_key else ""), (v if has_value else 0.0), b, kept


@st.composite
def categorical_entry(draw: st.DrawFn, m: Model) -> tuple[str, str, bytes, bool]:
    k, v = draw(categorical_keys(m)), draw(categorical_values(m))
    b, has_key, has_value, kept = draw(entry(3, k, ld(2, utf8(v)), ld(2, b"other")))
    return (k if has_key else ""), (v if has_value else ""), b, kept


@st.composite
def score_request(draw: st.DrawFn, m: Model) -> tuple[bytes, Expected]:
    """A `ScoreRequest`'s bytes: fields in any order, singular fields repeated, the applicant
    split over several occurrences, unknown fields anywhere."""
    exp = Expected()
    # Applicant pieces, in wire order.
    pieces: list[tuple[str, Any, bytes]] = []
    complete = draw(st.booleans())
    if complete:  # a complete, mostly valid applicant, then a few extras
        for i in m.numeric:
            if draw(st.integers(0, 39)) > 0:
                v = draw(valid_value(i))
                pieces.append(("num", (i.name, v), ld(2, ld(1, utf8(i.name)) + double(2, v))))
        for i in m.categorical:
            if draw(st.integers(0, 39)) > 0:
                c = draw(st.sampled_from(i.categories))
                pieces.append(("cat", (i.name, c), ld(3, ld(1, utf8(i.name)) + ld(2, utf8(c)))))
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]) if complete else st.integers(0, 4))):
        kind = draw(st.sampled_from(["num", "cat", "id", "unk"]))
        if kind == "num":
            k, v, b, kept = draw(numeric_entry(m))
            pieces.append(("num" if kept else "unk", (k, v), b))
        elif kind == "cat":
            k, s, b, kept = draw(categorical_entry(m))
            pieces.append(("cat" if kept else "unk", (k, s), b))
        elif kind == "id":
            a = draw(ids)
            pieces.append(("id", a, ld(1, utf8(a))))
        else:
            pieces.append(("unk", None, draw(unknown_fields(6))))
    pieces = draw(st.permutations(pieces)) if draw(st.booleans()) else pieces
    # Split the applicant over 0..3 occurrences (0 only when it has nothing in it).
    n_chunks = draw(st.integers(0 if not pieces else 1, 3))
    cuts = sorted(draw(st.lists(st.integers(0, len(pieces)), min_size=max(n_chunks - 1, 0))))
    bounds = [0, *cuts[: max(n_chunks - 1, 0)], len(pieces)]
    chunks = [pieces[a:b] for a, b in itertools.pairwise(bounds)][:n_chunks]
    # Request-level pieces.
    top: list[tuple[str, Any, bytes]] = [("app", c, b"") for c in chunks]
    for _ in range(draw(st.integers(0, 2))):
        r = draw(ids)
        top.append(("rid", r, ld(1, utf8(r))))
    for _ in range(draw(st.integers(0, 2))):
        v = draw(st.one_of(st.integers(0, 2), st.integers(0, 2**64 - 1)))
        top.append(("explain", v != 0, tag(3, 0) + varint(v)))
    for _ in range(draw(st.integers(0, 1))):
        top.append(("unk", None, draw(unknown_fields(4))))
    top = draw(st.permutations(top))
    out = bytearray()
    for kind, val, b in top:
        if kind == "app":
            out += ld(2, b"".join(p[2] for p in val))
            for pkind, pval, _ in val:
                if pkind == "num":
                    exp.numeric[pval[0]] = pval[1]
                elif pkind == "cat":
                    exp.categorical[pval[0]] = pval[1]
                elif pkind == "id":
                    exp.applicant_id = pval
        else:
            out += b
            if kind == "rid":
                exp.request_id = val
            elif kind == "explain":
                exp.explain = val
    return bytes(out), exp


@st.composite
def batch_request(draw: st.DrawFn, m: Model, max_requests: int = 4) -> tuple[bytes, list[Expected]]:
    reqs = draw(st.lists(score_request(m), max_size=max_requests))
    parts = [ld(1, b) for b, _ in reqs]
    for _ in range(draw(st.integers(0, 1))):
        parts.insert(draw(st.integers(0, len(parts))), draw(unknown_fields(2)))
    return b"".join(parts), [e for _, e in reqs]


# --------------------------------------------------------------------------------------------
# Comparisons


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def same_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> bool:
    return a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def reference(m: Model, rows: Sequence[tuple[dict[str, float], dict[str, str]]]) -> Any:
    return m.pipeline.transform_rows(list(rows))


def check_against_expected(m: Model, got: Decoded, exp: list[Expected]) -> None:
    """Exact agreement, violation order included, with dicts built in wire order."""
    rids, aids, explain, matrix, violations = got
    assert rids == [e.request_id for e in exp]
    assert aids == [e.applicant_id for e in exp]
    assert explain == [e.explain for e in exp]
    ref_matrix, ref_violations = reference(m, [(e.numeric, e.categorical) for e in exp])
    assert same_matrix(matrix, ref_matrix)
    assert violations == ref_violations


def check_against_protobuf(m: Model, got: Decoded, msg: pb.ScoreBatchRequest) -> None:
    """Agreement with the server's protobuf path (``dict(a.numeric)``): maps come out of upb in
    its hash order, so the map-level violations (unknown / wrong map) are compared as a multiset;
    the rest of the list (inputs in spec order) must be identical."""
    rids, aids, explain, matrix, violations = got
    reqs = list(msg.requests)
    assert rids == [r.request_id for r in reqs]
    assert aids == [r.applicant.applicant_id for r in reqs]
    assert explain == [r.explain for r in reqs]
    rows = [(dict(r.applicant.numeric), dict(r.applicant.categorical)) for r in reqs]
    ref_matrix, ref_violations = reference(m, rows)
    assert same_matrix(matrix, ref_matrix)
    for mine, theirs, (num, cat) in zip(violations, ref_violations, rows, strict=True):
        n_map = sum(1 for k in num if _slot(m, k) != "numeric") + sum(
            1 for k in cat if _slot(m, k) != "categorical"
        )
        assert Counter(mine[:n_map]) == Counter(theirs[:n_map])
        assert mine[n_map:] == theirs[n_map:]


def _slot(m: Model, name: str) -> str | None:
    if any(i.name == name for i in m.numeric):
        return "numeric"
    if any(i.name == name for i in m.categorical):
        return "categorical"
    return None


def protobuf_agrees(msg: pb.ScoreBatchRequest, exp: list[Expected]) -> None:
    """The hand-built bytes mean to protobuf what the test says they mean."""
    assert len(msg.requests) == len(exp)
    for r, e in zip(msg.requests, exp, strict=True):
        assert (r.request_id, r.applicant.applicant_id, r.explain) == (
            e.request_id,
            e.applicant_id,
            e.explain,
        )
        assert {k: bits(v) for k, v in r.applicant.numeric.items()} == {
            k: bits(v) for k, v in e.numeric.items()
        }
        assert dict(r.applicant.categorical) == e.categorical


def decode_or_error(m: Model, data: bytes, *, batch: bool) -> Decoded | ValueError:
    try:
        return m.decode(data, batch=batch)
    except ValueError as e:
        return e


def protobuf_or_error(data: bytes, *, batch: bool) -> pb.ScoreBatchRequest | DecodeError:
    try:
        if batch:
            return pb.ScoreBatchRequest.FromString(data)
        return pb.ScoreBatchRequest(requests=[pb.ScoreRequest.FromString(data)])
    except DecodeError as e:
        return e


# --------------------------------------------------------------------------------------------
# Decoding

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("spec", SPECS)
@FAST
@given(data=st.data())
def test_hand_built_batches_decode_like_protobuf_and_the_dict_path(
    spec: str, data: st.DataObject
) -> None:
    m = model(spec)
    raw, exp = data.draw(batch_request(m))
    protobuf_agrees(pb.ScoreBatchRequest.FromString(raw), exp)
    check_against_expected(m, m.decode(raw, batch=True), exp)


@pytest.mark.parametrize("spec", SPECS)
@FAST
@given(data=st.data())
def test_single_requests_decode_like_protobuf_and_the_dict_path(
    spec: str, data: st.DataObject
) -> None:
    m = model(spec)
    raw, exp = data.draw(score_request(m))
    protobuf_agrees(pb.ScoreBatchRequest(requests=[pb.ScoreRequest.FromString(raw)]), [exp])
    check_against_expected(m, m.decode(raw, batch=False), [exp])


@pytest.mark.parametrize("spec", SPECS)
@FAST
@given(data=st.data())
def test_protobuf_serialized_requests(spec: str, data: st.DataObject) -> None:
    """What real clients send: messages built with the protobuf classes and serialized."""
    m = model(spec)
    reqs = []
    for _ in range(data.draw(st.integers(0, 4))):
        numeric = data.draw(st.dictionaries(numeric_keys(m), numeric_values(m), max_size=12))
        categorical = data.draw(
            st.dictionaries(categorical_keys(m), categorical_values(m), max_size=12)
        )
        applicant = pb.Applicant(
            applicant_id=data.draw(ids), numeric=numeric, categorical=categorical
        )
        reqs.append(
            pb.ScoreRequest(
                request_id=data.draw(ids), applicant=applicant, explain=data.draw(st.booleans())
            )
        )
    msg = pb.ScoreBatchRequest(requests=reqs)
    check_against_protobuf(m, m.decode(msg.SerializeToString(), batch=True), msg)
    for r in reqs:
        one = pb.ScoreBatchRequest(requests=[r])
        check_against_protobuf(m, m.decode(r.SerializeToString(), batch=False), one)


def test_empty_input() -> None:
    m = model("gmsc")
    rids, aids, explain, matrix, violations = m.decode(b"", batch=True)
    assert (rids, aids, explain, violations) == ([], [], [], [])
    assert matrix.shape == (0, m.pipeline.n_features)
    check_against_expected(m, m.decode(b"", batch=False), [Expected()])


def test_a_bench_sized_batch_and_its_order() -> None:
    m = model("gmsc")
    numeric = {i.name: float(i.lo or 0.0) + 1.0 for i in m.numeric}
    numeric |= {"zz_unknown": 1.0, "aa_unknown": 2.0}
    msg = pb.ScoreBatchRequest(
        requests=[
            pb.ScoreRequest(
                request_id=f"r{i}",
                applicant=pb.Applicant(applicant_id=f"a{i}", numeric=numeric),
            )
            for i in range(64)
        ]
    )
    got = m.decode(msg.SerializeToString(), batch=True)
    check_against_protobuf(m, got, msg)
    assert got[0] == [f"r{i}" for i in range(64)]
    assert all(len(v) == 2 for v in got[4])


def test_non_finite_values_are_reported_as_the_dict_path_reports_them() -> None:
    m = model("gmsc")
    base = {i.name: float(i.lo or 0.0) + 1.0 for i in m.numeric}
    rows = [base | {"age": x} for x in (NAN, -NAN, math.inf, -math.inf, 1e308)]
    raw = b"".join(
        ld(1, ld(2, b"".join(ld(2, ld(1, utf8(k)) + double(2, v)) for k, v in r.items())))
        for r in rows
    )
    got = m.decode(raw, batch=True)
    check_against_expected(m, got, [Expected(numeric=r) for r in rows])
    assert all(v for v in got[4][1:])  # each of them is bad (NaN too: age is required)


# --------------------------------------------------------------------------------------------
# Malformed bytes


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_truncation_fails_or_agrees_with_protobuf(spec: str, data: st.DataObject) -> None:
    m = model(spec)
    batch = data.draw(st.booleans())
    if batch:
        raw, _ = data.draw(batch_request(m, max_requests=2))
    else:
        raw, _ = data.draw(score_request(m))
    for n in range(len(raw)):
        cut = raw[:n]
        ours = decode_or_error(m, cut, batch=batch)
        theirs = protobuf_or_error(cut, batch=batch)
        if isinstance(theirs, DecodeError):
            assert isinstance(ours, ValueError), n
        else:
            assert not isinstance(ours, ValueError), (n, ours)
            check_against_protobuf(m, ours, theirs)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=40), batch=st.booleans())
@example(raw=b"\x0a\x02\x0a\xff", batch=True)
@example(raw=b"\x0a\x04\x12\x02\x1a\x00", batch=True)
def test_random_bytes_never_crash(raw: bytes, batch: bool) -> None:
    """Whatever we accept, protobuf accepts and reads the same; whatever protobuf rejects, we
    reject. (We also reject groups and known fields with a wrong wire type, which protobuf keeps
    as unknown fields.)"""
    m = model("german_credit")
    ours = decode_or_error(m, raw, batch=batch)
    theirs = protobuf_or_error(raw, batch=batch)
    if isinstance(theirs, DecodeError):
        assert isinstance(ours, ValueError)
    if not isinstance(ours, ValueError):
        assert not isinstance(theirs, DecodeError)
        check_against_protobuf(m, ours, theirs)


BAD_UTF8 = b"\xc3\x28"

# (name, bytes of one ScoreRequest): rejected by protobuf and by us.
BOTH_REJECT = [
    ("bad utf-8 request_id", ld(1, BAD_UTF8)),
    ("bad utf-8 applicant_id", ld(2, ld(1, BAD_UTF8))),
    ("bad utf-8 numeric key", ld(2, ld(2, ld(1, b"a\xff")))),
    ("bad utf-8 categorical key", ld(2, ld(3, ld(1, BAD_UTF8)))),
    ("bad utf-8 categorical value", ld(2, ld(3, ld(1, b"purpose") + ld(2, b"\xed\xa0\x80")))),
    ("length past the end", b"\x0a\x05abc"),
    ("nested length past its parent", ld(2, b"\x0a\x09abc")),
    ("truncated varint", b"\x18\x80"),
    ("truncated double", ld(2, ld(2, ld(1, b"age") + b"\x11\x00\x00"))),
    ("11-byte varint", b"\x18" + b"\xff" * 10 + b"\x01"),
    ("field number 0", b"\x00\x01"),
    ("wire type 7", b"\x0f"),
    ("6-byte tag", b"\x88\x80\x80\x80\x80\x00\x01"),
    ("end group alone", b"\x0c"),
    ("6-byte length", b"\x0a\x80\x80\x80\x80\x80\x00"),
]

# Rejected by us only: protobuf keeps these as unknown fields.
WE_REJECT = [
    ("request_id as varint", b"\x08\x01"),
    ("explain as bytes", ld(3, b"\x01")),
    ("applicant as fixed64", b"\x11" + bytes(8)),
    ("numeric entry as varint", ld(2, b"\x10\x01")),
    ("numeric value as fixed32", ld(2, ld(2, ld(1, b"age") + b"\x15\x00\x00\x00\x00"))),
    ("categorical value as varint", ld(2, ld(3, ld(1, b"purpose") + b"\x10\x01"))),
    ("an unknown group", b"\x5b\x08\x01\x5c"),
    ("a group in the applicant", ld(2, b"\x5b\x5c")),
]


@pytest.mark.parametrize(("name", "raw"), BOTH_REJECT, ids=[n for n, _ in BOTH_REJECT])
def test_malformed_requests_raise_value_error(name: str, raw: bytes) -> None:
    m = model("german_credit")
    with pytest.raises(DecodeError):
        pb.ScoreRequest.FromString(raw)
    with pytest.raises(ValueError, match="malformed ScoreRequest"):
        m.decode(raw, batch=False)
    with pytest.raises(ValueError, match=r"malformed ScoreBatchRequest: requests\[1\]"):
        m.decode(ld(1, b"") + ld(1, raw), batch=True)


@pytest.mark.parametrize(("name", "raw"), WE_REJECT, ids=[n for n, _ in WE_REJECT])
def test_wrong_wire_types_and_groups_raise_value_error(name: str, raw: bytes) -> None:
    m = model("german_credit")
    pb.ScoreRequest.FromString(raw)  # protobuf: an unknown field
    with pytest.raises(ValueError, match="malformed ScoreRequest"):
        m.decode(raw, batch=False)


def test_error_messages_name_the_field_and_byte() -> None:
    m = model("german_credit")
    raw = ld(1, ld(1, b"ok")) + ld(1, ld(2, ld(3, ld(1, b"purpose") + ld(2, BAD_UTF8))))
    with pytest.raises(ValueError, match="malformed") as info:
        m.decode(raw, batch=True)
    assert str(info.value) == (
        "malformed ScoreBatchRequest: requests[1].applicant.categorical: "
        f"string is not valid UTF-8 (byte {raw.index(BAD_UTF8)})"
    )


def test_unknown_bytes_need_not_be_utf8() -> None:
    m = model("german_credit")
    raw = ld(1, b"r") + ld(15, b"\xff\xfe") + ld(2, ld(1, b"a") + ld(9, b"\xff"))
    assert pb.ScoreRequest.FromString(raw).request_id == "r"
    assert m.decode(raw, batch=False)[:2] == (["r"], ["a"])


@pytest.mark.parametrize("spec", SPECS)
@FAST
@given(data=st.data())
def test_numeric_values_decode_as_the_documented_rule(spec: str, data: st.DataObject) -> None:
    """``Applicant.numeric_values`` (packed, as protobuf writes it, or one tagged double each,
    which protobuf also accepts) decodes as the contract says: together with ``numeric`` or with
    the wrong count it is one violation of ``numeric_values``; else each value is the numeric
    input of its position (NaN = not given), and the row is the dict path's."""
    m = model(spec)
    n = len(m.numeric)
    size = data.draw(st.sampled_from([n, n, n, n - 1, n + 1, 1]))
    values = data.draw(st.lists(numeric_values(m) | st.just(NAN), min_size=size, max_size=size))
    numeric = data.draw(st.dictionaries(numeric_keys(m), numeric_values(m), max_size=2))
    categorical = data.draw(st.dictionaries(categorical_keys(m), categorical_values(m), max_size=3))
    applicant = pb.Applicant(
        applicant_id="a", numeric=numeric, categorical=categorical, numeric_values=values
    )
    packed = pb.ScoreRequest(request_id="r", applicant=applicant).SerializeToString()
    body = ld(1, b"a") + b"".join(double(4, v) for v in values)
    body += pb.Applicant(numeric=numeric, categorical=categorical).SerializeToString()
    unpacked = ld(1, b"r") + ld(2, body)
    assert pb.ScoreRequest.FromString(unpacked) == pb.ScoreRequest.FromString(packed)

    names = m.pipeline.numeric_inputs
    bad: list[tuple[str, str]] = []
    resolved: dict[str, float] = dict(numeric)
    if values and numeric:
        both = "send the numeric inputs in `numeric` or in `numeric_values`, not both"
        bad = [("numeric_values", both)]
    elif values and len(values) != len(names):
        bad = [
            (
                "numeric_values",
                f"expected {len(names)} values (the numeric inputs in GetModelInfo order), "
                f"got {len(values)}",
            )
        ]
    elif values:
        resolved = {k: v for k, v in zip(names, values, strict=True) if not math.isnan(v)}
    ref_matrix, (ref_violations,) = reference(m, [(resolved, dict(categorical))])
    expected = bad + ref_violations
    for raw in (packed, unpacked):
        _, _, _, matrix, (violations,) = m.decode(raw, batch=False)
        assert same_matrix(matrix, ref_matrix) or bad
        if len(numeric) + len(categorical) <= 1:  # else map-level ones: upb hash order
            assert violations == expected
        else:
            assert Counter(violations) == Counter(expected)
