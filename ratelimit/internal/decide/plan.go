// Package decide turns a ShouldRateLimit request into the hits to count (pure) and the outcomes
// of counting them into a response.
package decide

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/uplion/uplion/ratelimit/internal/rules"
)

const (
	// ReservationKey: a descriptor with this single entry names the request (Envoy's
	// x-request-id); token reservations are recorded under it and settled when the request's usage
	// event arrives.
	ReservationKey = "uplion_request_id"
	// ReservationPrefix is the Redis key prefix of reservations (uplion.ratelimit.settle reads it).
	ReservationPrefix = "uplion:rl:resv:"
	// LimitsPrefix is where the accounts service publishes a user's or token's own limits
	// (uplion.core.credentials.limits_key).
	LimitsPrefix = "uplion:limits:"
	// MaxKeyPartBytes bounds what of a descriptor entry appears in a Redis key name: a longer key
	// or value (and one that looks hashed already) is replaced by its SHA-256, so no request
	// header, however large, makes a large key (the edge's values are ids of a few dozen bytes).
	MaxKeyPartBytes = 128
	hashedPrefix    = "sha256:"
)

// KeyPart is a descriptor key or value as it appears in Redis key names: itself when it is at
// most MaxKeyPartBytes long, else "sha256:" and its digest in hex (71 bytes). Values that start
// with "sha256:" are hashed too, so a short value can never name a long one's counter, and so are
// values with a brace: the only Redis Cluster hash tags in key names are the ones join and
// OverrideFor put there, so no client-chosen value can pick a key's hash slot.
func KeyPart(s string) string {
	if len(s) <= MaxKeyPartBytes && !strings.HasPrefix(s, hashedPrefix) && !strings.ContainsAny(s, "{}") {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return hashedPrefix + hex.EncodeToString(sum[:])
}

// ReservationRedisKey is the Redis key of the reservation recorded under a request id.
func ReservationRedisKey(requestID string) string {
	return ReservationPrefix + KeyPart(requestID)
}

// overrideSubjects: whose account limits a descriptor's last entry names.
var overrideSubjects = map[string]string{"user_id": "user", "token_id": "token"}

// Hit is one limit to check and count for a request.
type Hit struct {
	Index    int    // the descriptor's position in the request
	Rule     string // the rule's path, for metrics
	Limit    *rules.Limit
	Kind     string // "requests" or "tokens"
	Shadow   bool
	Key      string // the counter
	Hits     uint64
	Override string // the account-limits hash ("" none) and its field
	Field    string
	Reserve  bool // record the hits under the request's reservation, to settle later
}

// Plan is what a request asks to count.
type Plan struct {
	Hits        []Hit
	Reservation string       // "" when the request named none
	Unlimited   map[int]bool // descriptors whose rule is unlimited
}

// tagged is the index of the entry whose value is a counter key's Redis Cluster hash tag: the
// last user_id or token_id entry with a value; -1 when there is none.
func tagged(entries []rules.Entry) int {
	for i := len(entries) - 1; i >= 0; i-- {
		if _, ok := overrideSubjects[entries[i].Key]; ok && entries[i].Value != "" {
			return i
		}
	}
	return -1
}

// join is a descriptor as it appears in counter key names: key_value|key_value, the tagged
// entry's value in braces (user_id_{u1}), so that all of a user's (or token's) counters and its
// account limits (OverrideFor) are in one Redis Cluster hash slot.
func join(entries []rules.Entry) string {
	tag := tagged(entries)
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(KeyPart(e.Key))
		b.WriteByte('_')
		if i == tag {
			b.WriteByte('{')
			b.WriteString(KeyPart(e.Value))
			b.WriteByte('}')
		} else {
			b.WriteString(KeyPart(e.Value))
		}
	}
	return b.String()
}

// CounterKey is the Redis key counting a descriptor under a limit: GCRA keeps one key per
// descriptor and unit, fixed windows one per epoch-aligned window.
func CounterKey(domain string, entries []rules.Entry, l *rules.Limit, nowS int64) string {
	if l.GCRA {
		return "uplion:rl:g:" + domain + ":" + join(entries) + ":" + l.Unit
	}
	w := l.WindowS()
	return "uplion:rl:" + domain + ":" + join(entries) + ":" + strconv.FormatInt(nowS/w*w, 10)
}

// LimitField is the account-limits hash field of a kind and unit: rpm, tph, tpd, ...
// (uplion.core.credentials.limit_field).
func LimitField(kind, unit string) string {
	return string(kind[0]) + "p" + string(unit[0])
}

// OverrideFor is where an account's own limit for this rule lives: ("uplion:limits:user:{u_1}",
// "rpm"); ("", "") for descriptors that name no account. The braces are the id's Redis Cluster hash
// tag, the same as in the descriptor's counter keys (join).
func OverrideFor(entries []rules.Entry, kind string, l *rules.Limit) (string, string) {
	last := entries[len(entries)-1]
	subject, ok := overrideSubjects[last.Key]
	if !ok || last.Value == "" {
		return "", ""
	}
	return LimitsPrefix + subject + ":{" + KeyPart(last.Value) + "}", LimitField(kind, l.Unit)
}

var unitNames = map[rlspb.RateLimitResponse_RateLimit_Unit]string{
	rlspb.RateLimitResponse_RateLimit_SECOND: "second", rlspb.RateLimitResponse_RateLimit_MINUTE: "minute",
	rlspb.RateLimitResponse_RateLimit_HOUR: "hour", rlspb.RateLimitResponse_RateLimit_DAY: "day",
	rlspb.RateLimitResponse_RateLimit_WEEK: "week", rlspb.RateLimitResponse_RateLimit_MONTH: "month",
	rlspb.RateLimitResponse_RateLimit_YEAR: "year",
}

// UnitEnum is the response's unit of a unit name.
var UnitEnum = func() map[string]rlspb.RateLimitResponse_RateLimit_Unit {
	out := map[string]rlspb.RateLimitResponse_RateLimit_Unit{}
	for k, v := range unitNames {
		out[v] = k
	}
	return out
}()

type match struct {
	index   int
	entries []rules.Entry
	node    *rules.Node
	limit   *rules.Limit
	tokens  bool
}

// MakePlan lists the hits to count for a request, its reservation id and its unlimited
// descriptors. domain is nil when the request's domain has no rules.
func MakePlan(domain *rules.Domain, req *rlspb.RateLimitRequest, nowS int64) Plan {
	defaultHits := uint64(max(1, req.GetHitsAddend()))
	p := Plan{}
	var matches []match
	for i, d := range req.GetDescriptors() {
		entries := make([]rules.Entry, len(d.GetEntries()))
		for j, e := range d.GetEntries() {
			entries[j] = rules.Entry{Key: e.GetKey(), Value: e.GetValue()}
		}
		if len(entries) == 0 {
			continue
		}
		if len(entries) == 1 && entries[0].Key == ReservationKey {
			p.Reservation = entries[0].Value
			continue
		}
		m := match{index: i, entries: entries, tokens: d.GetHitsAddend() != nil}
		if override := d.GetLimit(); override != nil { // a limit sent by Envoy overrides the config, as in the reference
			unit, ok := unitNames[rlspb.RateLimitResponse_RateLimit_Unit(override.GetUnit())]
			if !ok {
				continue
			}
			m.node = &rules.Node{Path: "override"}
			m.limit = &rules.Limit{RequestsPerUnit: uint64(override.GetRequestsPerUnit()), Unit: unit}
		} else if domain == nil {
			continue
		} else if m.node = rules.Find(domain, entries); m.node == nil {
			continue
		} else {
			m.limit = m.node.Limit
		}
		matches = append(matches, m)
	}
	replaced := map[string]bool{}
	for _, m := range matches {
		for _, name := range m.limit.Replaces {
			replaced[name] = true
		}
		if m.limit.Unlimited {
			if p.Unlimited == nil {
				p.Unlimited = map[int]bool{}
			}
			p.Unlimited[m.index] = true
		}
	}
	for _, m := range matches {
		if m.limit.Unlimited || (m.limit.Name != "" && replaced[m.limit.Name]) {
			continue
		}
		hits, kind := defaultHits, "requests"
		if m.tokens {
			hits, kind = req.GetDescriptors()[m.index].GetHitsAddend().GetValue(), "tokens"
		}
		okey, ofield := OverrideFor(m.entries, kind, m.limit)
		p.Hits = append(p.Hits, Hit{
			Index: m.index, Rule: m.node.Path, Limit: m.limit, Kind: kind, Shadow: m.node.ShadowMode,
			Key: CounterKey(req.GetDomain(), m.entries, m.limit, nowS), Hits: hits, Override: okey, Field: ofield,
			Reserve: m.tokens && p.Reservation != "",
		})
	}
	return p
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// QuotaHeldPrefix is where authz holds admitted requests' bounds against a user's or token's quota
// (uplion.core.quota.HELD_KEY): a hash per subject, a field per request id.
const QuotaHeldPrefix = "uplion:quota:held:"

// HeldField is one request's hold on one subject: the hash and its field.
type HeldField struct{ Key, Field string }

// QuotaHolds names the holds authz made for a request (pure): for each subject the request's
// descriptors name (user_id, token_id: the headers authz set), that subject's hold under the
// request id. A request the limiter refuses never reaches the gateway, so no usage event would
// release them; the service deletes them at once. None without a request id.
func QuotaHolds(req *rlspb.RateLimitRequest, requestID string) []HeldField {
	if requestID == "" {
		return nil
	}
	seen := map[string]bool{}
	var out []HeldField
	for _, d := range req.GetDescriptors() {
		for _, e := range d.GetEntries() {
			subject, ok := overrideSubjects[e.GetKey()]
			if !ok || e.GetValue() == "" || strings.ContainsAny(e.GetValue(), "{}") {
				continue // authz's ids never hold braces: such a value names no hold
			}
			key := QuotaHeldPrefix + subject + ":{" + e.GetValue() + "}"
			if !seen[key] {
				seen[key] = true
				out = append(out, HeldField{Key: key, Field: KeyPart(requestID)})
			}
		}
	}
	return out
}
