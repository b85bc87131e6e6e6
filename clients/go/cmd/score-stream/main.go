// Command score-stream scores two applicants on one ScoreStream with the Go stubs generated from
// proto/ and prints every answer: a score, or the error status with its google.rpc.BadRequest
// field violations (field, reason, description). The second applicant is bad on purpose: its
// error answer comes back in the stream, and the stream goes on.
//
//	go run ./cmd/score-stream -target 127.0.0.1:50051
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	scoringv1 "github.com/altscore/altscore/gen/go/credit/scoring/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

func applicant(id string, age float64) *scoringv1.Applicant {
	return &scoringv1.Applicant{
		ApplicantId: id,
		Numeric: map[string]float64{
			"revolving_utilization": 0.35, "age": age, "past_due_30_59": 0, "debt_ratio": 0.3,
			"monthly_income": 5200, "open_credit_lines": 7, "times_90_days_late": 0,
			"real_estate_loans": 1, "past_due_60_89": 0, "dependents": 2,
		},
	}
}

func run(target string) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := scoringv1.NewScoringClient(conn).ScoreStream(ctx)
	if err != nil {
		return err
	}
	requests := []*scoringv1.ScoreRequest{
		{RequestId: "go-1", Applicant: applicant("customer-1", 41)},
		{RequestId: "go-2", Applicant: applicant("customer-2", 7)},
		{RequestId: "go-3", Applicant: applicant("customer-3", 52)},
	}
	for _, r := range requests {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		answer, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch result := answer.Result.(type) {
		case *scoringv1.ScoreStreamResponse_Response:
			r := result.Response
			fmt.Printf("%s: pd=%.6f score=%d decision=%s model=%s v%s\n", answer.RequestId, r.Pd,
				r.Score, r.Decision, r.Model.GetName(), r.Model.GetVersion())
		case *scoringv1.ScoreStreamResponse_Error:
			status := result.Error
			fmt.Printf("%s: error %s: %s\n", answer.RequestId, codes.Code(status.Code), status.Message)
			for _, detail := range status.Details {
				bad := &errdetails.BadRequest{}
				if err := detail.UnmarshalTo(bad); err != nil {
					continue
				}
				for _, v := range bad.FieldViolations {
					fmt.Printf("  violation %s [%s]: %s\n", v.Field, v.Reason, v.Description)
				}
			}
		}
	}
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "host:port of the scoring server")
	flag.Parse()
	if err := run(*target); err != nil {
		fmt.Fprintln(os.Stderr, "score-stream:", err)
		os.Exit(1)
	}
}
