// Command score-sequence scores one applicant n times in sequence on one connection with the Go
// stubs generated from proto/ and prints the wall time of the n calls: a quick latency check of
// a deployment from the client side, one call in flight at a time.
//
//	go run ./cmd/score-sequence -target 127.0.0.1:50051 -n 100
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	scoringv1 "github.com/altscore/altscore/gen/go/credit/scoring/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func run(target string, n int) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := scoringv1.NewScoringClient(conn)
	request := &scoringv1.ScoreRequest{
		RequestId: "go-seq",
		Applicant: &scoringv1.Applicant{
			ApplicantId: "customer-1",
			Numeric: map[string]float64{
				"revolving_utilization": 0.35, "age": 41, "past_due_30_59": 0, "debt_ratio": 0.3,
				"monthly_income": 5200, "open_credit_lines": 7, "times_90_days_late": 0,
				"real_estate_loans": 1, "past_due_60_89": 0, "dependents": 2,
			},
		},
	}
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := client.Score(ctx, request)
		return err
	}
	if err := call(); err != nil { // connects; not timed
		return err
	}
	started := time.Now()
	for i := 0; i < n; i++ {
		if err := call(); err != nil {
			return err
		}
	}
	elapsed := time.Since(started)
	fmt.Printf("calls=%d elapsed_ms=%.3f mean_us=%.1f\n", n, float64(elapsed.Microseconds())/1000,
		float64(elapsed.Microseconds())/float64(n))
	return nil
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "host:port of the scoring server")
	n := flag.Int("n", 100, "calls to make, one after another")
	flag.Parse()
	if err := run(*target, *n); err != nil {
		fmt.Fprintln(os.Stderr, "score-sequence:", err)
		os.Exit(1)
	}
}
