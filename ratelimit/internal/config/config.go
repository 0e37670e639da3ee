// Package config reads the service's settings from environment variables.
package config

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Settings of the rate-limit service.
type Settings struct {
	Listen       string        // UPLION_RATELIMIT_LISTEN, default 0.0.0.0:8081
	RedisURL     string        // UPLION_REDIS_URL (required), redis://host:port/db
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
