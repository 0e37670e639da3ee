package service

import (
	"context"
	"errors"
	"testing"

	ratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/uplion/uplion/ratelimit/internal/decide"
	"github.com/uplion/uplion/ratelimit/internal/rules"
)

type fixedRules map[string]*rules.Domain

func (f fixedRules) Domains() map[string]*rules.Domain { return f }

type decider struct {
	calls    int
	err      error
	over     bool
	released []decide.HeldField
}

func (d *decider) ReleaseHolds(_ context.Context, holds []decide.HeldField) error {
	d.released = append(d.released, holds...)
	return nil
}

func (d *decider) Decide(_ context.Context, hits []decide.Hit, _ int64, _ string, _ int64) (bool, []decide.Outcome, error) {
	d.calls++
	if d.err != nil {
		return false, nil, d.err
	}
	out := make([]decide.Outcome, len(hits))
	for i, h := range hits {
		out[i] = decide.Outcome{Over: d.over, Limit: h.Limit.RequestsPerUnit, ResetMs: 1000}
	}
	return d.over, out, nil
}

func domains(t testing.TB) fixedRules {
	t.Helper()
	open, err := rules.Parse([]byte("domain: open\ndescriptors: [{key: k, rate_limit: {unit: minute, requests_per_unit: 1}}]"), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	closed, err := rules.Parse([]byte("domain: closed\nfailure_mode_deny: true\ndescriptors: [{key: k, rate_limit: {unit: minute, requests_per_unit: 1}}]"), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return fixedRules{"open": open, "closed": closed}
}

func request(domain string) *rlspb.RateLimitRequest {
	return &rlspb.RateLimitRequest{Domain: domain, Descriptors: []*ratelimitpb.RateLimitDescriptor{
		{Entries: []*ratelimitpb.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}}},
	}}
}

func TestWithoutRedisEachDomainFollowsItsFailMode(t *testing.T) {
	d := &decider{err: errors.New("redis unavailable")}
	s := New(domains(t), d)
	allowBefore := testutil.ToFloat64(failures.WithLabelValues("allow"))
	denyBefore := testutil.ToFloat64(failures.WithLabelValues("deny"))
	open, _ := s.ShouldRateLimit(context.Background(), request("open"))
	closed, _ := s.ShouldRateLimit(context.Background(), request("closed"))
	if open.OverallCode != rlspb.RateLimitResponse_OK || closed.OverallCode != rlspb.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("open %v, closed %v", open.OverallCode, closed.OverallCode)
	}
	if len(closed.RawBody) == 0 {
		t.Error("a refusal without a body")
	}
	if testutil.ToFloat64(failures.WithLabelValues("allow"))-allowBefore != 1 || testutil.ToFloat64(failures.WithLabelValues("deny"))-denyBefore != 1 {
		t.Error("failures not counted by mode")
	}
}

func TestRequestsWithoutRulesNeverTouchRedis(t *testing.T) {
	d := &decider{}
	s := New(domains(t), d)
	for _, req := range []*rlspb.RateLimitRequest{request("unknown-domain"), {Domain: "open"}} {
		resp, err := s.ShouldRateLimit(context.Background(), req)
		if err != nil || resp.OverallCode != rlspb.RateLimitResponse_OK {
			t.Fatalf("%v %v", resp, err)
		}
	}
	if d.calls != 0 {
		t.Fatalf("%d calls to the limiter", d.calls)
	}
}

func TestOverLimitIsCountedPerRule(t *testing.T) {
	s := New(domains(t), &decider{over: true})
	before := testutil.ToFloat64(overTotal.WithLabelValues("open", "k"))
	resp, _ := s.ShouldRateLimit(context.Background(), request("open"))
	if resp.OverallCode != rlspb.RateLimitResponse_OVER_LIMIT || testutil.ToFloat64(overTotal.WithLabelValues("open", "k"))-before != 1 {
		t.Fatalf("%v", resp)
	}
}

func TestARefusedRequestReleasesItsQuotaHolds(t *testing.T) {
	entries := func(kv ...string) *ratelimitpb.RateLimitDescriptor {
		d := &ratelimitpb.RateLimitDescriptor{}
		for i := 0; i < len(kv); i += 2 {
			d.Entries = append(d.Entries, &ratelimitpb.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
		}
		return d
	}
	req := &rlspb.RateLimitRequest{Domain: "open", Descriptors: []*ratelimitpb.RateLimitDescriptor{
		entries("k", "v"),
		entries("generic_key", "requests", "user_id", "u_1"),
		entries("generic_key", "requests", "token_id", "t_1"),
		entries("generic_key", "tokens", "user_id", "u_1"),
		entries(decide.ReservationKey, "req-1"),
	}}
	allowed := &decider{}
	if _, err := New(domains(t), allowed).ShouldRateLimit(context.Background(), req); err != nil || len(allowed.released) != 0 {
		t.Fatalf("an allowed request released holds: %v %v", allowed.released, err)
	}
	refused := &decider{over: true}
	if _, err := New(domains(t), refused).ShouldRateLimit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	want := []decide.HeldField{
		{Key: "uplion:quota:held:user:{u_1}", Field: "req-1"},
		{Key: "uplion:quota:held:token:{t_1}", Field: "req-1"},
	}
	if len(refused.released) != 2 || refused.released[0] != want[0] || refused.released[1] != want[1] {
		t.Fatalf("released %v, want %v", refused.released, want)
	}
}
