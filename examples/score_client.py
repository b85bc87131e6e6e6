"""A first call from Python: score one Give Me Some Credit applicant.

uv run python examples/score_client.py [127.0.0.1:50051]
"""

from __future__ import annotations

import sys

import grpc

from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc


def main(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ScoringStub(channel)  # type: ignore[no-untyped-call]
        request = pb.ScoreRequest(
            request_id="example-1",
            applicant=pb.Applicant(
                applicant_id="customer-42",
                numeric={
                    "revolving_utilization": 0.77,
                    "age": 45,
                    "past_due_30_59": 2,
                    "debt_ratio": 0.80,
                    "monthly_income": 9120,
                    "open_credit_lines": 13,
                    "times_90_days_late": 0,
                    "real_estate_loans": 6,
                    "past_due_60_89": 0,
                    "dependents": 2,
                },
            ),
        )
        response = stub.Score(request, timeout=5)
    decision = pb.Decision.Name(response.decision)
    print(
        f"request {response.request_id}: pd={response.pd:.4f} score={response.score} "
        f"decision={decision} model={response.model.name} v{response.model.version}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
