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

func TestRedisClusterSetting(t *testing.T) {
	for v, want := range map[string]bool{"": false, "true": true, "1": true, "YES": true, "on": true, "false": false, "0": false, "no": false, "Off": false} {
		s, err := FromEnv(lookup(map[string]string{"UPLION_REDIS_URL": "redis://:pw@10.0.0.1:7000/0", "UPLION_REDIS_CLUSTER": v}))
		if err != nil || s.RedisCluster != want {
			t.Errorf("%q: %v %v", v, s.RedisCluster, err)
		}
	}
	for env, msg := range map[string]string{
		"maybe":                   "UPLION_REDIS_CLUSTER",
		"redis://10.0.0.1:7000/3": "only database 0",
		"redis://10.0.0.1":        "host:port",
		"10.0.0.1:7000":           "redis[s]://",
	} {
		m := map[string]string{"UPLION_REDIS_URL": "redis://10.0.0.1:7000", "UPLION_REDIS_CLUSTER": "true"}
		if env == "maybe" {
			m["UPLION_REDIS_CLUSTER"] = env
		} else {
			m["UPLION_REDIS_URL"] = env
		}
		if _, err := FromEnv(lookup(m)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v", env, err)
		}
	}
	// standalone mode keeps handing the URL to radix as it is
	if _, err := FromEnv(lookup(map[string]string{"UPLION_REDIS_URL": "redis://10.0.0.1:7000/3"})); err != nil {
		t.Error(err)
	}
	a, err := ParseRedisURL("redis://user:p%40ss@h:1/0")
	if err != nil || a != (RedisAddr{Addr: "h:1", User: "user", Password: "p@ss", DB: "0"}) {
		t.Errorf("%+v %v", a, err)
	}
	a, err = ParseRedisURL("rediss://:tok@clustercfg.example.cache.amazonaws.com:6379")
	if err != nil || a != (RedisAddr{Addr: "clustercfg.example.cache.amazonaws.com:6379", Password: "tok", TLS: true}) {
		t.Errorf("%+v %v", a, err)
	}
}
