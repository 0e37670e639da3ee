package decide

import (
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/uplion/uplion/ratelimit/internal/headers"
)

// Outcome is what counting one hit found.
type Outcome struct {
	Over      bool
	Limit     uint64 // the limit in force (an account's own limit overrides the rule's)
	Remaining uint64
	ResetMs   int64
}

// UnlimitedRemaining is what the reference reports for an unlimited descriptor.
const UnlimitedRemaining = 1<<32 - 1

func header(k, v string) *corepb.HeaderValue { return &corepb.HeaderValue{Key: k, Value: v} }

// Respond builds the response to a request from its plan and one outcome per planned hit.
func Respond(req *rlspb.RateLimitRequest, p *Plan, outcomes []Outcome, rejected bool) *rlspb.RateLimitResponse {
	resp := &rlspb.RateLimitResponse{OverallCode: rlspb.RateLimitResponse_OK}
	if rejected {
		resp.OverallCode = rlspb.RateLimitResponse_OVER_LIMIT
	}
	n := len(req.GetDescriptors())
	resp.Statuses = make([]*rlspb.RateLimitResponse_DescriptorStatus, n)
	for i := range n {
		resp.Statuses[i] = &rlspb.RateLimitResponse_DescriptorStatus{Code: rlspb.RateLimitResponse_OK}
		if p.Unlimited[i] {
			resp.Statuses[i].LimitRemaining = UnlimitedRemaining
		}
	}
	statuses := make([]headers.Status, 0, len(p.Hits))
	for j := range p.Hits {
		h, o := &p.Hits[j], outcomes[j]
		s := resp.Statuses[h.Index]
		if o.Over && !h.Shadow {
			s.Code = rlspb.RateLimitResponse_OVER_LIMIT
		}
		s.CurrentLimit = &rlspb.RateLimitResponse_RateLimit{
			RequestsPerUnit: uint32(min(o.Limit, UnlimitedRemaining)), Unit: UnitEnum[h.Limit.Unit],
		}
		s.LimitRemaining = uint32(min(o.Remaining, UnlimitedRemaining))
		s.DurationUntilReset = durationpb.New(msDuration(o.ResetMs))
		if !h.Shadow {
			statuses = append(statuses, headers.Status{
				Kind: h.Kind, Over: o.Over, Limit: o.Limit, Remaining: o.Remaining, ResetMs: o.ResetMs,
				Unit: h.Limit.Unit,
			})
		}
	}
	for _, hv := range headers.Response(statuses, rejected) {
		resp.ResponseHeadersToAdd = append(resp.ResponseHeadersToAdd, header(hv.Key, hv.Value))
	}
	if rejected {
		resp.RawBody = headers.OverLimitBody(statuses)
		resp.ResponseHeadersToAdd = append(resp.ResponseHeadersToAdd, header("content-type", "application/json"))
	}
	return resp
}

// Unavailable is the response when Redis cannot answer: every descriptor OK, and the request
// allowed, or refused with a 503-style body when the domain fails closed.
func Unavailable(req *rlspb.RateLimitRequest, deny bool) *rlspb.RateLimitResponse {
	resp := &rlspb.RateLimitResponse{OverallCode: rlspb.RateLimitResponse_OK}
	for range req.GetDescriptors() {
		resp.Statuses = append(resp.Statuses, &rlspb.RateLimitResponse_DescriptorStatus{Code: rlspb.RateLimitResponse_OK})
	}
	if deny {
		resp.OverallCode = rlspb.RateLimitResponse_OVER_LIMIT
		resp.RawBody = headers.UnavailableBody()
		resp.ResponseHeadersToAdd = append(resp.ResponseHeadersToAdd, header("content-type", "application/json"))
	}
	return resp
}
