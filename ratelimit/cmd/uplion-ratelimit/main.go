// uplion-ratelimit: the rate-limit service for Envoy (envoy.service.ratelimit.v3), until SIGTERM,
// then drain. Token reservations it records are settled by `python -m uplion.ratelimit` (usage
// events from Pulsar).
package main

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/uplion/uplion/ratelimit/internal/config"
	"github.com/uplion/uplion/ratelimit/internal/limiter"
	"github.com/uplion/uplion/ratelimit/internal/loader"
	"github.com/uplion/uplion/ratelimit/internal/service"
	"github.com/uplion/uplion/ratelimit/internal/tracing"
)

//go:embed default.yaml
var defaultRules []byte

const serviceName = "envoy.service.ratelimit.v3.RateLimitService"

func main() {
	cfg, err := config.FromEnv(config.Default)
	if err != nil {
		fmt.Fprintf(os.Stderr, "uplion ratelimit: configuration error: %v\n", err)
		os.Exit(2)
	}
	setupLogging(cfg.LogLevel)
	if _, set := os.LookupEnv("GOGC"); !set {
		// The live heap is a few MB and every decision allocates a little: at the default GOGC=100
		// the collector took about a quarter of the service's CPU at 10k decisions/s. GOGC (and
		// GOMEMLIMIT) in the environment override this.
		debug.SetGCPercent(400)
	}
	if err := serve(cfg); err != nil {
		slog.Error("ratelimit stopped", "error", err.Error())
		os.Exit(1)
	}
}

func setupLogging(level string) {
	var l slog.Level
	// the Python services' names: WARNING is slog's WARN, CRITICAL its ERROR
	level = strings.NewReplacer("WARNING", "WARN", "CRITICAL", "ERROR").Replace(strings.ToUpper(level))
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: pythonSchema}
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, opts)).With("service", "ratelimit", "logger", "uplion.ratelimit"))
}

// pythonSchema gives slog's records the keys every uplion service logs (uplion.core.logs): ts (UTC,
// milliseconds, Z), level in lower case ("warning", not "WARN"), msg.
func pythonSchema(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("ts", a.Value.Time().UTC().Format("2006-01-02T15:04:05.000Z"))
	case slog.LevelKey:
		level := strings.ToLower(a.Value.String())
		if level == "warn" {
			level = "warning"
		}
		return slog.String("level", level)
	}
	return a
}

func serve(cfg config.Settings) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	service.Register(registry)
	loader.Register(registry)
	limiter.Register(registry)
	if cfg.MetricsPort != 0 {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
		// UPLION_METRICS_HOST: every interface by default (in-cluster scraping); the local stack binds loopback
		addr := net.JoinHostPort(os.Getenv("UPLION_METRICS_HOST"), strconv.Itoa(cfg.MetricsPort))
		metrics := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = metrics.ListenAndServe() }()
		defer metrics.Close()
	}

	rules, err := loader.New(cfg.ConfigDir, defaultRules)
	if err != nil {
		return err
	}
	// traces: only when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT names a collector (internal/tracing)
	tp, err := tracing.Setup(ctx, os.Getenv)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	if tp != nil {
		defer func() { // after the drain: export the spans still held, bounded like the drain
			flush, cancel := context.WithTimeout(context.Background(), cfg.Drain)
			defer cancel()
			if err := tp.Shutdown(flush); err != nil {
				slog.Warn("traces not all exported at exit", "error", err.Error())
			}
		}()
	}
	lim, err := connect(ctx, cfg)
	if err != nil || lim == nil {
		return err // nil, nil: stopped while waiting for Redis
	}
	defer lim.Close()
	background, cancel := context.WithCancel(context.Background())
	defer cancel()
	go lim.Probe(background, 25*time.Millisecond) // an outage is seen within ~50 ms; idle cost 40 PINGs/s
	if cfg.ConfigDir != "" {
		go rules.Watch(background, cfg.Reload)
	}

	server := grpc.NewServer()
	svc := service.New(rules, lim)
	if tp != nil {
		svc = svc.Trace(tp)
	}
	rlspb.RegisterRateLimitServiceServer(server, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(server, hs)
	reflection.Register(server)
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(serviceName, healthpb.HealthCheckResponse_SERVING)
	served := make(chan error, 1)
	go func() { served <- server.Serve(lis) }()
	names := make([]string, 0)
	for name := range rules.Domains() {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Printf("uplion ratelimit listening on port %d (domains: %s)\n", lis.Addr().(*net.TCPAddr).Port, strings.Join(names, ", "))

	select {
	case err := <-served:
		if !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
	case <-ctx.Done():
	}
	hs.Shutdown() // NOT_SERVING: load balancers stop sending new calls
	drained := make(chan struct{})
	go func() { server.GracefulStop(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(cfg.Drain):
		server.Stop()
	}
	slog.Info("ratelimit stopped")
	return nil
}

// connect waits for Redis (retrying every second, until SIGTERM) rather than crash-looping: until
// then the service is not listening, and Envoy's ratelimit filter fails open. With
// UPLION_REDIS_CLUSTER the URL is a seed node of a Redis Cluster.
func connect(ctx context.Context, cfg config.Settings) (*limiter.Limiter, error) {
	for {
		var lim *limiter.Limiter
		var err error
		if cfg.RedisCluster {
			var a config.RedisAddr
			if a, err = config.ParseRedisURL(cfg.RedisURL); err != nil {
				return nil, err // checked by config.FromEnv already
			}
			var tlsCfg *tls.Config
			if a.TLS {
				_, tlsCfg = limiter.TLSFor("rediss://")
			}
			lim, err = limiter.NewCluster(ctx, a.Addr, a.User, a.Password, tlsCfg, cfg.RedisTimeout, cfg.RedisConns)
		} else {
			lim, err = limiter.New(ctx, cfg.RedisURL, cfg.RedisTimeout, cfg.RedisConns)
		}
		if err == nil {
			return lim, nil
		}
		slog.Warn("waiting for redis", "error", err.Error())
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Second):
		}
	}
}
