// Package config reads the service's settings from environment variables.
package config

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Settings of the rate-limit service.
type Settings struct {
	Listen       string        // UPLION_RATELIMIT_LISTEN, default 0.0.0.0:8081
	RedisURL     string        // UPLION_REDIS_URL (required), redis://host:port/db
	RedisCluster bool          // UPLION_REDIS_CLUSTER, default false: RedisURL is a seed node of a Redis Cluster
	ConfigDir    string        // UPLION_RATELIMIT_CONFIG_DIR; "" for the built-in default rules
	Reload       time.Duration // UPLION_RATELIMIT_RELOAD_S, default 1
	RedisTimeout time.Duration // UPLION_RATELIMIT_REDIS_TIMEOUT_MS, default 50: the bound on a decision's wait for Redis
	RedisConns   int           // UPLION_RATELIMIT_REDIS_CONNECTIONS, default 4 (pipelined)
	MetricsPort  int           // UPLION_METRICS_PORT; 0 disables /metrics
	Drain        time.Duration // UPLION_DRAIN_TIMEOUT_S, default 5
	LogLevel     string        // UPLION_LOG_LEVEL, default INFO
}

type env func(string) (string, bool)

func (e env) str(name, def string) string {
	if v, ok := e(name); ok && v != "" {
		return v
	}
	return def
}

func (e env) number(name string, def, minimum float64) (float64, error) {
	v, ok := e(name)
	if !ok || v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < minimum {
		return 0, fmt.Errorf("%s must be a number >= %g, got %q", name, minimum, v)
	}
	return f, nil
}

func (e env) boolean(name string) (bool, error) {
	v, ok := e(name)
	if !ok || v == "" {
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("%s must be true or false (1/0, yes/no, on/off), got %q", name, v)
}

// RedisAddr is a redis:// or rediss:// URL taken apart.
type RedisAddr struct {
	Addr           string // host:port
	User, Password string // "" when the URL names none
	DB             string // "" when the URL names none
	TLS            bool   // rediss://: Redis over TLS
}

// ParseRedisURL reads redis[s]://[user][:password@]host:port[/db]: what the cluster client needs,
// which (unlike radix's single-server dialer) does not read a URL for the nodes it discovers.
func ParseRedisURL(raw string) (RedisAddr, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// not echoed: it may hold a password
		return RedisAddr{}, fmt.Errorf("UPLION_REDIS_URL must be redis[s]://[:password@]host:port[/db] and does not parse as a URL")
	}
	if (u.Scheme != "redis" && u.Scheme != "rediss") || u.Hostname() == "" || u.Port() == "" {
		return RedisAddr{}, fmt.Errorf("UPLION_REDIS_URL must be redis[s]://[:password@]host:port[/db], got %q", u.Redacted())
	}
	a := RedisAddr{Addr: u.Host, User: u.User.Username(), TLS: u.Scheme == "rediss"}
	a.Password, _ = u.User.Password()
	a.DB = strings.TrimPrefix(u.Path, "/")
	return a, nil
}

// FromEnv reads the settings; lookup is os.LookupEnv outside tests.
func FromEnv(lookup func(string) (string, bool)) (Settings, error) {
	e := env(lookup)
	s := Settings{
		Listen:    e.str("UPLION_RATELIMIT_LISTEN", "0.0.0.0:8081"),
		RedisURL:  e.str("UPLION_REDIS_URL", ""),
		ConfigDir: e.str("UPLION_RATELIMIT_CONFIG_DIR", ""),
		LogLevel:  e.str("UPLION_LOG_LEVEL", "INFO"),
	}
	if s.RedisURL == "" {
		return s, fmt.Errorf("UPLION_REDIS_URL is required")
	}
	cluster, err := e.boolean("UPLION_REDIS_CLUSTER")
	if err != nil {
		return s, err
	}
	s.RedisCluster = cluster
	if cluster {
		a, err := ParseRedisURL(s.RedisURL)
		if err != nil {
			return s, err
		}
		if a.DB != "" && a.DB != "0" {
			return s, fmt.Errorf("UPLION_REDIS_URL: a Redis Cluster has only database 0, the URL names %q", a.DB)
		}
	}
	var reload, timeout, conns, metrics, drain float64
	for _, n := range []struct {
		name         string
		def, minimum float64
		into         *float64
	}{
		{"UPLION_RATELIMIT_RELOAD_S", 1, 0.05, &reload},
		{"UPLION_RATELIMIT_REDIS_TIMEOUT_MS", 50, 1, &timeout},
		{"UPLION_RATELIMIT_REDIS_CONNECTIONS", 4, 1, &conns},
		{"UPLION_METRICS_PORT", 0, 0, &metrics},
		{"UPLION_DRAIN_TIMEOUT_S", 5, 0, &drain},
	} {
		v, err := e.number(n.name, n.def, n.minimum)
		if err != nil {
			return s, err
		}
		*n.into = v
	}
	s.Reload = time.Duration(reload * float64(time.Second))
	s.RedisTimeout = time.Duration(timeout * float64(time.Millisecond))
	s.RedisConns = int(conns)
	s.MetricsPort = int(metrics)
	s.Drain = time.Duration(drain * float64(time.Second))
	return s, nil
}

// Default is os.LookupEnv.
var Default = os.LookupEnv
