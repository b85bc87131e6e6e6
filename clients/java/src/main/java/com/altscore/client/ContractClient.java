package com.altscore.client;

import com.altscore.credit.scoring.v1.Applicant;
import com.altscore.credit.scoring.v1.ScoreRequest;
import com.altscore.credit.scoring.v1.ScoreResponse;
import com.altscore.credit.scoring.v1.ScoreStreamResponse;
import com.altscore.credit.scoring.v1.ScoringGrpc;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import com.google.rpc.Status;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * The Java contract client: stubs generated from proto/ by grpc-java's plugin. Against a
 * target it
 *
 * <ol>
 *   <li>calls {@code Score} with a good applicant and prints its PD ({@code java-1});
 *   <li>calls {@code Score} with a bad one and decodes the call's {@code google.rpc.Status}
 *       (trailer {@code grpc-status-details-bin}) and its {@code google.rpc.BadRequest}
 *       ({@code java-2});
 *   <li>opens {@code ScoreStream}, sends a good and a bad message and prints both answers, the
 *       bad one's {@code google.rpc.Status} with its field violations ({@code java-3},
 *       {@code java-4}).
 * </ol>
 *
 * <p>Each violation is printed as {@code violation <field> [<reason>]: <description>}. Exits
 * non-zero when a call fails in a way the contract does not describe.
 *
 * <pre>mvn -q -B compile exec:java -Dexec.args=127.0.0.1:50051</pre>
 */
public final class ContractClient {
  private static final long DEADLINE_SECONDS = 10;

  private ContractClient() {}

  static Applicant applicant(String id, double age) {
    return Applicant.newBuilder()
        .setApplicantId(id)
        .putAllNumeric(
            Map.of(
                "revolving_utilization", 0.35,
                "age", age,
                "past_due_30_59", 0.0,
                "debt_ratio", 0.3,
                "monthly_income", 5200.0,
                "open_credit_lines", 7.0,
                "times_90_days_late", 0.0,
                "real_estate_loans", 1.0,
                "past_due_60_89", 0.0,
                "dependents", 2.0))
        .build();
  }

  static ScoreRequest request(String requestId, String applicantId, double age) {
    return ScoreRequest.newBuilder()
        .setRequestId(requestId)
        .setApplicant(applicant(applicantId, age))
        .build();
  }

  static void printScore(String requestId, ScoreResponse r) {
    System.out.printf(
        "%s: pd=%.6f score=%d decision=%s model=%s v%s%n",
        requestId,
        r.getPd(),
        r.getScore(),
        r.getDecision(),
        r.getModel().getName(),
        r.getModel().getVersion());
  }

  static void printError(String requestId, Status status) throws InvalidProtocolBufferException {
    System.out.printf(
        "%s: error %s: %s%n", requestId, Code.forNumber(status.getCode()), status.getMessage());
    for (Any detail : status.getDetailsList()) {
      if (!detail.is(BadRequest.class)) {
        continue;
      }
      for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
        System.out.printf(
            "  violation %s [%s]: %s%n", v.getField(), v.getReason(), v.getDescription());
      }
    }
  }

  static void unary(ScoringGrpc.ScoringBlockingStub stub) throws InvalidProtocolBufferException {
    ScoringGrpc.ScoringBlockingStub timed =
        stub.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS);
    printScore("java-1", timed.score(request("java-1", "customer-1", 41)));
    try {
      stub.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
          .score(request("java-2", "customer-2", 7));
      throw new IllegalStateException("java-2: a bad applicant was scored");
    } catch (StatusRuntimeException e) {
      Status status = StatusProto.fromThrowable(e);
      if (status == null) {
        throw new IllegalStateException("java-2: no google.rpc.Status in the trailers", e);
      }
      printError("java-2", status);
    }
  }

  static void stream(ScoringGrpc.ScoringStub stub) throws Exception {
    List<ScoreStreamResponse> answers = new ArrayList<>();
    CompletableFuture<Void> done = new CompletableFuture<>();
    StreamObserver<ScoreRequest> requests =
        stub.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
            .scoreStream(
                new StreamObserver<>() {
                  @Override
                  public void onNext(ScoreStreamResponse answer) {
                    answers.add(answer);
                  }

                  @Override
                  public void onError(Throwable t) {
                    done.completeExceptionally(t);
                  }

                  @Override
                  public void onCompleted() {
                    done.complete(null);
                  }
                });
    requests.onNext(request("java-3", "customer-3", 52));
    requests.onNext(request("java-4", "customer-4", 7));
    requests.onCompleted();
    done.get(DEADLINE_SECONDS, TimeUnit.SECONDS);
    for (ScoreStreamResponse answer : answers) {
      switch (answer.getResultCase()) {
        case RESPONSE -> printScore(answer.getRequestId(), answer.getResponse());
        case ERROR -> printError(answer.getRequestId(), answer.getError());
        default -> throw new IllegalStateException(answer.getRequestId() + ": empty answer");
      }
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length > 1) {
      throw new IllegalArgumentException("usage: ContractClient [host:port]");
    }
    String target = args.length == 1 ? args[0] : "127.0.0.1:50051";
    ManagedChannel channel =
        Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build();
    try {
      unary(ScoringGrpc.newBlockingStub(channel));
      stream(ScoringGrpc.newStub(channel));
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }
}
