package config

import (
	"strings"
	"testing"
	"time"
)

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaultsAndErrors(t *testing.T) {
	s, err := FromEnv(lookup(map[string]string{"UPLION_REDIS_URL": "redis://127.0.0.1:6379/0"}))
	if err != nil || s.Listen != "0.0.0.0:8081" || s.RedisTimeout != 50*time.Millisecond || s.Reload != time.Second {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := FromEnv(lookup(map[string]string{})); err == nil || !strings.Contains(err.Error(), "UPLION_REDIS_URL") {
		t.Fatalf("missing redis: %v", err)
	}
	_, err = FromEnv(lookup(map[string]string{"UPLION_REDIS_URL": "redis://x", "UPLION_RATELIMIT_REDIS_TIMEOUT_MS": "soon"}))
	if err == nil || !strings.Contains(err.Error(), "UPLION_RATELIMIT_REDIS_TIMEOUT_MS") {
		t.Fatalf("bad timeout: %v", err)
	}
}
