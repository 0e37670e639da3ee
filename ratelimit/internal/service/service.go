// Package service serves envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit: find each
// descriptor's rule, decide all of a request's limits in one Redis round trip, answer with
// statuses, headers and a 429 body.
package service

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"

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
}

// everySecond lets one caller through per second (for log lines on a hot path).
type everySecond struct{ last atomic.Int64 }

func (e *everySecond) allow(now time.Time) bool {
	last := e.last.Load()
	return now.Unix() > last && e.last.CompareAndSwap(last, now.Unix())
}

// New serves decisions from the rules in force and the limiter.
func New(r Domains, l Decider) *Service { return &Service{rules: r, limiter: l} }

// ShouldRateLimit decides one request.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlspb.RateLimitRequest) (*rlspb.RateLimitResponse, error) {
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
			slog.Warn("redis unavailable; deciding without it", "error", err.Error(), "deny", deny)
		}
		return decide.Unavailable(req, deny), nil
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
