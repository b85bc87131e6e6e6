// Command score makes two unary Score calls with the Go stubs generated from proto/ and prints
// each answer: the first applicant's score, then the second's error, bad on purpose, with the
// google.rpc.Status the server sends in the call's trailers (grpc-status-details-bin) and its
// google.rpc.BadRequest field violations (field, reason, description).
//
//	go run ./cmd/score -target 127.0.0.1:50051
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	scoringv1 "github.com/altscore/altscore/gen/go/credit/scoring/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func request(id, applicantID string, age float64) *scoringv1.ScoreRequest {
	return &scoringv1.ScoreRequest{
		RequestId: id,
		Applicant: &scoringv1.Applicant{
			ApplicantId: applicantID,
			Numeric: map[string]float64{
				"revolving_utilization": 0.35, "age": age, "past_due_30_59": 0, "debt_ratio": 0.3,
				"monthly_income": 5200, "open_credit_lines": 7, "times_90_days_late": 0,
				"real_estate_loans": 1, "past_due_60_89": 0, "dependents": 2,
			},
		},
	}
}

func run(target string) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := scoringv1.NewScoringClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	r, err := client.Score(ctx, request("go-unary-1", "customer-1", 41))
	if err != nil {
		return err
	}
	fmt.Printf("go-unary-1: pd=%.6f score=%d decision=%s model=%s v%s\n", r.Pd, r.Score,
		r.Decision, r.Model.GetName(), r.Model.GetVersion())

	_, err = client.Score(ctx, request("go-unary-2", "customer-2", 7))
	if err == nil {
		return errors.New("go-unary-2: a bad applicant was scored")
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("go-unary-2: not a gRPC status: %w", err)
	}
	fmt.Printf("go-unary-2: error %s: %s\n", st.Code(), st.Message())
	for _, detail := range st.Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range bad.FieldViolations {
				fmt.Printf("  violation %s [%s]: %s\n", v.Field, v.Reason, v.Description)
			}
		}
	}
	return nil
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "host:port of the scoring server")
	flag.Parse()
	if err := run(*target); err != nil {
		fmt.Fprintln(os.Stderr, "score:", err)
		os.Exit(1)
	}
}
