package service

import (
	"context"
	"errors"
	"strings"
	"testing"

	ratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/uplion/uplion/ratelimit/internal/decide"
)

// Envoy's rate-limit filter span, as its W3C trace context arrives in the call's metadata.
const (
	envoyTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	envoySpanID  = "00f067aa0ba902b7"
)

func traced(t *testing.T, d *decider) (*Service, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return New(domains(t), d).Trace(tp), rec
}

func fromEnvoy() context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(
		"traceparent", "00-"+envoyTraceID+"-"+envoySpanID+"-01", "tracestate", "envoy=1"))
}

// what the edge sends (edge/uplion/edge/filters.py rate_limit_actions), two windows of it, plus a
// model entry as a rule set may carry
func edgeRequest(domain string) *rlspb.RateLimitRequest {
	entries := func(kv ...string) *ratelimitpb.RateLimitDescriptor {
		d := &ratelimitpb.RateLimitDescriptor{}
		for i := 0; i < len(kv); i += 2 {
			d.Entries = append(d.Entries, &ratelimitpb.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
		}
		return d
	}
	return &rlspb.RateLimitRequest{Domain: domain, Descriptors: []*ratelimitpb.RateLimitDescriptor{
		entries("k", "v"),
		entries("generic_key", "requests", "user_id", "u_1"),
		entries("generic_key", "requests", "token_id", "tok_1"),
		entries("generic_key", "tokens", "user_id", "u_other"), // the first descriptor naming a user wins
		entries("model", "echo"),
		entries(decide.ReservationKey, "req-1"),
	}}
}

func attributes(s sdktrace.ReadOnlySpan) map[string]attribute.Value {
	out := map[string]attribute.Value{}
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value
	}
	return out
}

func onlySpan(t *testing.T, rec *tracetest.SpanRecorder) sdktrace.ReadOnlySpan {
	t.Helper()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	return spans[0]
}

func TestADecisionIsAServerSpanUnderEnvoysWithItsAttributes(t *testing.T) {
	for _, tc := range []struct {
		over bool
		code string
	}{{false, "OK"}, {true, "OVER_LIMIT"}} {
		s, rec := traced(t, &decider{over: tc.over})
		resp, err := s.ShouldRateLimit(fromEnvoy(), edgeRequest("open"))
		if err != nil || resp.GetOverallCode().String() != tc.code {
			t.Fatalf("%v %v", resp, err)
		}
		span := onlySpan(t, rec)
		if span.Name() != SpanName || span.SpanKind() != trace.SpanKindServer {
			t.Fatalf("span %q kind %v", span.Name(), span.SpanKind())
		}
		if got := span.Parent(); !got.IsRemote() || got.TraceID().String() != envoyTraceID || got.SpanID().String() != envoySpanID {
			t.Fatalf("parent %v, want Envoy's span", got)
		}
		if span.SpanContext().TraceID().String() != envoyTraceID || span.SpanContext().TraceState().Get("envoy") != "1" {
			t.Fatalf("not in Envoy's trace: %v", span.SpanContext())
		}
		want := map[string]attribute.Value{
			"uplion.domain":       attribute.StringValue("open"),
			"uplion.descriptors":  attribute.IntValue(6),
			"uplion.overall_code": attribute.StringValue(tc.code),
			"uplion.user_id":      attribute.StringValue("u_1"),
			"uplion.token_id":     attribute.StringValue("tok_1"),
			"uplion.model":        attribute.StringValue("echo"),
			"uplion.request_id":   attribute.StringValue("req-1"),
			"rpc.system":          attribute.StringValue("grpc"),
			"rpc.service":         attribute.StringValue("envoy.service.ratelimit.v3.RateLimitService"),
			"rpc.method":          attribute.StringValue("ShouldRateLimit"),
		}
		got := attributes(span)
		if len(got) != len(want) {
			t.Errorf("attributes %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %v, want %v", k, got[k].Emit(), v.Emit())
			}
		}
		if span.Status().Code != codes.Unset {
			t.Errorf("status %v", span.Status())
		}
	}
}

func TestADecisionWithoutRedisIsAFailedSpan(t *testing.T) {
	s, rec := traced(t, &decider{err: errors.New("i/o timeout")})
	resp, _ := s.ShouldRateLimit(fromEnvoy(), edgeRequest("closed")) // failure_mode_deny
	span := onlySpan(t, rec)
	if resp.GetOverallCode() != rlspb.RateLimitResponse_OVER_LIMIT || attributes(span)["uplion.overall_code"].AsString() != "OVER_LIMIT" {
		t.Fatalf("%v %v", resp.GetOverallCode(), attributes(span))
	}
	if st := span.Status(); st.Code != codes.Error || !strings.Contains(st.Description, "i/o timeout") {
		t.Fatalf("status %v", st)
	}
}

func TestWithoutTraceContextTheSpanIsARootAndIdsAreBounded(t *testing.T) {
	s, rec := traced(t, &decider{})
	long := strings.Repeat("é", maxAttributeBytes) // 2 bytes a rune: the cut falls inside one
	req := &rlspb.RateLimitRequest{Domain: "unknown", Descriptors: []*ratelimitpb.RateLimitDescriptor{
		{Entries: []*ratelimitpb.RateLimitDescriptor_Entry{{Key: decide.ReservationKey, Value: long}}},
	}}
	if _, err := s.ShouldRateLimit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	span := onlySpan(t, rec)
	if span.Parent().IsValid() {
		t.Fatalf("parent %v", span.Parent())
	}
	id := attributes(span)["uplion.request_id"].AsString()
	if len(id) > maxAttributeBytes || !strings.HasPrefix(long, id) || !strings.HasSuffix(id, "é") {
		t.Fatalf("request id of %d bytes: %q", len(id), id)
	}
}

func TestTracingOffMakesNoSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	global := otel.GetTracerProvider()
	otel.SetTracerProvider(tp) // even with a global provider installed,
	defer otel.SetTracerProvider(global)
	s := New(domains(t), &decider{}) // a service not given one (main, unless a collector is configured) traces nothing
	if _, err := s.ShouldRateLimit(fromEnvoy(), edgeRequest("open")); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Ended()) + len(rec.Started()); n != 0 {
		t.Fatalf("%d spans", n)
	}
}

// go test -run - -bench ShouldRateLimit -benchmem ./internal/service: a decision's own cost (the
// limiter is the in-memory decider) with tracing off and on (the batch span processor, as main
// sets it up, in front of an exporter that discards).
func BenchmarkShouldRateLimit(b *testing.B) {
	req, ctx := edgeRequest("open"), fromEnvoy()
	b.Run("tracing off", func(b *testing.B) {
		s := New(domains(b), &decider{})
		b.ReportAllocs()
		for b.Loop() {
			_, _ = s.ShouldRateLimit(ctx, req)
		}
	})
	b.Run("tracing on", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		defer tp.Shutdown(context.Background())
		s := New(domains(b), &decider{}).Trace(tp)
		b.ReportAllocs()
		for b.Loop() {
			_, _ = s.ShouldRateLimit(ctx, req)
		}
	})
}
