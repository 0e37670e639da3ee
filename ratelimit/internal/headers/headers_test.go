package headers

import (
	"encoding/json"
	"testing"
)

func asMap(hs []Header) map[string]string {
	out := map[string]string{}
	for _, h := range hs {
		out[h.Key] = h.Value
	}
	return out
}

func TestHeadersFollowOpenAIAndTheIETFDraft(t *testing.T) {
	statuses := []Status{
		{Kind: "requests", Limit: 100, Remaining: 7, ResetMs: 30_000, Unit: "minute"},
		{Kind: "tokens", Limit: 1000, Remaining: 900, ResetMs: 1500, Unit: "minute"},
	}
	h := asMap(Response(statuses, false))
	want := map[string]string{
		"x-ratelimit-remaining-requests": "7", "x-ratelimit-reset-requests": "30s", "x-ratelimit-remaining-tokens": "900",
		"x-ratelimit-reset-tokens": "2s", "ratelimit-remaining": "7", "ratelimit-limit": "100", "ratelimit-reset": "30",
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
	if _, ok := h["retry-after"]; ok {
		t.Error("retry-after on an allowed request")
	}
	refused := asMap(Response([]Status{{Kind: "tokens", Over: true, Limit: 1000, Remaining: 3, ResetMs: 61_000}}, true))
	if refused["retry-after"] != "61" {
		t.Errorf("retry-after = %q", refused["retry-after"])
	}
	for ms, want := range map[int64]string{20: "20ms", 360_000: "6m0s", 3_723_000: "1h2m3s", 1001: "2s"} {
		if got := OpenAIDuration(ms); got != want {
			t.Errorf("OpenAIDuration(%d) = %q, want %q", ms, got, want)
		}
	}
}

func TestOverLimitBodyNamesTheLimitThatRefused(t *testing.T) {
	body := OverLimitBody([]Status{
		{Kind: "requests", Limit: 10, Remaining: 0, ResetMs: 5000, Unit: "minute"},
		{Kind: "tokens", Over: true, Limit: 500, Remaining: 20, ResetMs: 2000, Unit: "minute"},
	})
	var parsed struct {
		Error struct {
			Message, Type, Code string
			Param               *string
		}
	}
	if err := json.Unmarshal(body, &parsed); err != nil {
		t.Fatal(err)
	}
	e := parsed.Error
	if e.Type != "tokens" || e.Code != "rate_limit_exceeded" || e.Param != nil ||
		e.Message != "Rate limit reached for tokens per minute: limit 500, remaining 20. Try again in 2s." {
		t.Fatalf("%+v", e)
	}
}
