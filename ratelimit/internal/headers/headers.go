// Package headers builds the response headers and 429 bodies of rate-limit decisions (pure).
//
// Clients see both the IETF draft's RateLimit-Limit/Remaining/Reset (seconds) and OpenAI's
// x-ratelimit-{limit,remaining,reset}-{requests,tokens} (reset as a duration like "1m30s"), each
// from the most constrained limit of its kind in the request.
package headers

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Status is one limit's outcome as a client should see it.
type Status struct {
	Kind      string // "requests" or "tokens"
	Over      bool
	Limit     uint64
	Remaining uint64
	ResetMs   int64
	Unit      string
}

// Header is one response header.
type Header struct{ Key, Value string }

func ceilSeconds(ms int64) int64 { return (ms + 999) / 1000 }

// OpenAIDuration is OpenAI's reset format: "20ms", "1s", "6m0s", "1h2m3s".
func OpenAIDuration(ms int64) string {
	if ms < 1000 {
		return fmt.Sprintf("%dms", ms)
	}
	s := ceilSeconds(ms)
	h, m, sec := s/3600, s%3600/60, s%60
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%dm%ds", h, m, sec)
	case m > 0:
		return fmt.Sprintf("%dm%ds", m, sec)
	}
	return fmt.Sprintf("%ds", sec)
}

// heeds reports whether a client should heed a over b: any over limit first, then the least
// remaining, then the latest reset.
func heeds(a, b *Status) bool {
	if a.Over != b.Over {
		return a.Over
	}
	if a.Remaining != b.Remaining {
		return a.Remaining < b.Remaining
	}
	return a.ResetMs > b.ResetMs
}

// Tightest is the status a client should heed among those of the kind ("" for any), or nil.
func Tightest(statuses []Status, kind string, overOnly bool) *Status {
	var best *Status
	for i := range statuses {
		s := &statuses[i]
		if (kind != "" && s.Kind != kind) || (overOnly && !s.Over) {
			continue
		}
		if best == nil || heeds(s, best) {
			best = s
		}
	}
	return best
}

// Response lists the headers of a decision.
func Response(statuses []Status, rejected bool) []Header {
	var out []Header
	overall := Tightest(statuses, "", false)
	if overall != nil {
		out = append(out,
			Header{"ratelimit-limit", strconv.FormatUint(overall.Limit, 10)},
			Header{"ratelimit-remaining", strconv.FormatUint(overall.Remaining, 10)},
			Header{"ratelimit-reset", strconv.FormatInt(ceilSeconds(overall.ResetMs), 10)},
		)
	}
	for _, kind := range [...]string{"requests", "tokens"} {
		if s := Tightest(statuses, kind, false); s != nil {
			out = append(out,
				Header{"x-ratelimit-limit-" + kind, strconv.FormatUint(s.Limit, 10)},
				Header{"x-ratelimit-remaining-" + kind, strconv.FormatUint(s.Remaining, 10)},
				Header{"x-ratelimit-reset-" + kind, OpenAIDuration(s.ResetMs)},
			)
		}
	}
	if rejected && overall != nil {
		out = append(out, Header{"retry-after", strconv.FormatInt(max(1, ceilSeconds(overall.ResetMs)), 10)})
	}
	return out
}

type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

func body(message, typ, code string) []byte {
	b, _ := json.Marshal(map[string]apiError{"error": {Message: message, Type: typ, Code: code}})
	return b
}

// OverLimitBody is the 429 body in OpenAI's error shape, naming the limit that refused.
func OverLimitBody(statuses []Status) []byte {
	s := Tightest(statuses, "", true)
	if s == nil {
		s = Tightest(statuses, "", false)
	}
	if s == nil {
		return body("Rate limit reached.", "requests", "rate_limit_exceeded")
	}
	message := fmt.Sprintf("Rate limit reached for %s per %s: limit %d, remaining %d. Try again in %s.",
		s.Kind, s.Unit, s.Limit, s.Remaining, OpenAIDuration(s.ResetMs))
	return body(message, s.Kind, "rate_limit_exceeded")
}

// UnavailableBody is the 429 body when Redis cannot answer and the domain fails closed.
func UnavailableBody() []byte {
	return body("Rate limiting is unavailable; try again shortly.", "api_error", "rate_limit_unavailable")
}
