"""ghz's ``--binary-file`` layout: length-prefixed messages, read back exactly as ghz reads them
(first as length-prefixed messages; a bare ``ScoreBatchRequest`` used to arrive as an empty
batch that way)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.grpc_load import ghz_body
from scoring_server.grpc._proto import scoring_pb2 as pb


def _read_delimited(data: bytes) -> list[bytes]:
    """ghz's ``createPayloadsFromBinCountDelimited``: varint length, then that many bytes, until
    the data ends or a message is cut short (ghz keeps what it read: no error)."""
    out, at = [], 0
    while at < len(data):
        length, shift = 0, 0
        while at < len(data):
            byte = data[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if at + length > len(data):
            break
        out.append(data[at : at + length])
        at += length
    return out


def _request(i: int) -> pb.ScoreRequest:
    return pb.ScoreRequest(
        request_id=f"r-{i}",
        applicant=pb.Applicant(applicant_id=f"a-{i}", numeric={"age": 40.0 + i, "debt": 0.25}),
    )


def test_a_batch_reads_back_as_one_whole_batch(tmp_path: Path) -> None:
    batch = pb.ScoreBatchRequest(requests=[_request(i) for i in range(64)])
    body = ghz_body(tmp_path / "batch.bin", [batch])
    (only,) = _read_delimited(body.read_bytes())
    assert pb.ScoreBatchRequest.FromString(only) == batch
    # the bare message is what ghz misread: read as length-prefixed, it is not the batch
    bare = batch.SerializeToString()
    assert _read_delimited(bare) != [bare]


def test_messages_read_back_in_order(tmp_path: Path) -> None:
    messages = [_request(i) for i in range(300)]  # lengths past one varint byte too
    body = ghz_body(tmp_path / "many.bin", messages)
    assert [pb.ScoreRequest.FromString(m) for m in _read_delimited(body.read_bytes())] == messages
