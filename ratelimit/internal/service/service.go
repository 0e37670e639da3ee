// Package service serves envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit: find each
// descriptor's rule, decide all of a request's limits in one Redis round trip, answer with
// statuses, headers and a 429 body.
package service

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/uplion/uplion/ratelimit/internal/decide"
	"github.com/uplion/uplion/ratelimit/internal/rules"
)

func ruleCounter(name, help string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"domain", "rule"})
}

var (
	hitsTotal   = ruleCounter("uplion_ratelimit_hits_total", "Hits checked per rule")
	overTotal   = ruleCounter("uplion_ratelimit_over_limit_total", "Hits over the limit per rule")
	nearTotal   = ruleCounter("uplion_ratelimit_near_limit_total", "Hits allowed at or above 80% of the limit")
	shadowTotal = ruleCounter("uplion_ratelimit_shadow_mode_total", "Over-limit hits let through by shadow_mode")
	failures    = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "uplion_ratelimit_redis_failures_total", Help: "Decisions made without Redis, by fail mode",
	}, []string{"mode"})
	holdReleaseFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "uplion_ratelimit_quota_hold_release_failures_total",
		Help: "Refused requests whose quota holds could not be deleted (they expire)",
	})
)

// Register adds the service's metrics to a registry.
func Register(r prometheus.Registerer) {
	r.MustRegister(hitsTotal, overTotal, nearTotal, shadowTotal, failures, holdReleaseFailures)
}

// Domains gives the rules in force.
type Domains interface {
	Domains() map[string]*rules.Domain
}

// Decider counts hits (limiter.Limiter).
type Decider interface {
	Decide(ctx context.Context, hits []decide.Hit, nowMs int64, reservation string, ttlMs int64) (bool, []decide.Outcome, error)
	ReleaseHolds(ctx context.Context, holds []decide.HeldField) error
}

// Service is the RateLimitService.
type Service struct {
	rlspb.UnimplementedRateLimitServiceServer
	rules     Domains
	limiter   Decider
	outageLog everySecond
	tracer    trace.Tracer // nil: tracing off
}

// everySecond lets one caller through per second (for log lines on a hot path).
type everySecond struct{ last atomic.Int64 }

func (e *everySecond) allow(now time.Time) bool {
	last := e.last.Load()
	return now.Unix() > last && e.last.CompareAndSwap(last, now.Unix())
}

// New serves decisions from the rules in force and the limiter.
func New(r Domains, l Decider) *Service { return &Service{rules: r, limiter: l} }

// SpanName is the name of the span of each decision.
const SpanName = "ratelimit ShouldRateLimit"

// Trace makes every decision a span of tp's (internal/tracing.Setup: only when tracing is on).
func (s *Service) Trace(tp trace.TracerProvider) *Service {
	s.tracer = tp.Tracer("github.com/uplion/uplion/ratelimit")
	return s
}

// ShouldRateLimit decides one request.
//
// Its span is made here rather than by otelgrpc's stats handler: the handler would be called for
// each event of every RPC the server serves (health checks and reflection included), tracing on or
// off, and would build its attributes from the method name; here tracing off costs one nil test per
// decision, and on, one span with the attributes that matter.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlspb.RateLimitRequest) (*rlspb.RateLimitResponse, error) {
	if s.tracer == nil {
		resp, _ := s.decide(ctx, req)
		return resp, nil
	}
	// the parent: Envoy's rate-limit filter sends its span's W3C trace context as gRPC metadata
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = propagation.TraceContext{}.Extract(ctx, metadataCarrier(md))
	ctx, span := s.tracer.Start(ctx, SpanName, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(requestAttributes(req)...))
	defer span.End()
	resp, redisErr := s.decide(ctx, req)
	span.SetAttributes(attribute.String("uplion.overall_code", resp.GetOverallCode().String()))
	if redisErr != nil {
		span.SetStatus(codes.Error, "decided without redis: "+redisErr.Error())
	}
	return resp, nil
}

// spanEntries: the descriptor entries whose values name the request on its span (ids, never a key:
// the edge sends no credential to the rate limiter), and the attribute each becomes.
var spanEntries = map[string]string{
	"user_id":             "uplion.user_id",
	"token_id":            "uplion.token_id",
	"model":               "uplion.model",
	decide.ReservationKey: "uplion.request_id",
}

// maxAttributeBytes bounds a value taken from a descriptor (the edge's are ids of a few dozen bytes).
const maxAttributeBytes = 256

func requestAttributes(req *rlspb.RateLimitRequest) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("rpc.system", "grpc"),
		attribute.String("rpc.service", "envoy.service.ratelimit.v3.RateLimitService"),
		attribute.String("rpc.method", "ShouldRateLimit"),
		attribute.String("uplion.domain", req.GetDomain()),
		attribute.Int("uplion.descriptors", len(req.GetDescriptors())),
	}
	for _, d := range req.GetDescriptors() {
		for _, e := range d.GetEntries() {
			name, ok := spanEntries[e.GetKey()]
			if !ok || e.GetValue() == "" || named(attrs, name) { // the first descriptor naming it wins
				continue
			}
			v := e.GetValue()
			if len(v) > maxAttributeBytes {
				v = strings.ToValidUTF8(v[:maxAttributeBytes], "") // OTLP drops a batch with invalid UTF-8
			}
			attrs = append(attrs, attribute.String(name, v))
		}
	}
	return attrs
}

func named(attrs []attribute.KeyValue, name string) bool {
	for _, a := range attrs {
		if string(a.Key) == name {
			return true
		}
	}
	return false
}

// metadataCarrier reads W3C trace context from incoming gRPC metadata (whose keys are lower case;
// propagation.HeaderCarrier would look for "Traceparent").
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// decide answers one request; the error is Redis's when the answer was made without it.
func (s *Service) decide(ctx context.Context, req *rlspb.RateLimitRequest) (*rlspb.RateLimitResponse, error) {
	domain := s.rules.Domains()[req.GetDomain()]
	now := time.Now()
	p := decide.MakePlan(domain, req, now.Unix())
	if len(p.Hits) == 0 {
		return decide.Respond(req, &p, nil, false), nil
	}
	var ttlMs int64
	for i := range p.Hits {
		if p.Hits[i].Reserve {
			ttlMs = max(ttlMs, p.Hits[i].Limit.WindowS()*1000)
		}
	}
	reservation := ""
	if p.Reservation != "" {
		reservation = decide.ReservationRedisKey(p.Reservation)
	}
	rejected, outcomes, err := s.limiter.Decide(ctx, p.Hits, now.UnixMilli(), reservation, ttlMs)
	if err != nil {
		deny := domain != nil && domain.FailureModeDeny
		mode := "allow"
		if deny {
			mode = "deny"
		}
		failures.WithLabelValues(mode).Inc()
		if s.outageLog.allow(now) { // every decision is counted; one log line a second is enough
			args := []any{"error", err.Error(), "deny", deny}
			if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
				args = append(args, "trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
			}
			slog.Warn("redis unavailable; deciding without it", args...)
		}
		return decide.Unavailable(req, deny), err
	}
	record(req.GetDomain(), p.Hits, outcomes)
	if rejected {
		// authz held this request's bound against its quotas; no usage event will release it
		if err := s.limiter.ReleaseHolds(ctx, decide.QuotaHolds(req, p.Reservation)); err != nil {
			holdReleaseFailures.Inc()
		}
	}
	return decide.Respond(req, &p, outcomes, rejected), nil
}

func record(domain string, hits []decide.Hit, outcomes []decide.Outcome) {
	for i := range hits {
		h, o := &hits[i], outcomes[i]
		n := float64(h.Hits)
		hitsTotal.WithLabelValues(domain, h.Rule).Add(n)
		switch {
		case o.Over && h.Shadow:
			shadowTotal.WithLabelValues(domain, h.Rule).Add(n)
		case o.Over:
			overTotal.WithLabelValues(domain, h.Rule).Add(n)
		case o.Limit > 0 && float64(o.Limit-min(o.Remaining, o.Limit)) >= 0.8*float64(o.Limit):
			nearTotal.WithLabelValues(domain, h.Rule).Add(n)
		}
	}
}
