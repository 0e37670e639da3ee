// Package loader keeps the rules in force: every *.yaml (and *.yml) in a directory, one domain
// each, reloaded when any file changes. A file that does not parse is reported and the last good
// rules stay in force.
package loader

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplion/uplion/ratelimit/internal/rules"
)

var (
	loads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "uplion_ratelimit_config_loads_total", Help: "Rule reloads by result",
	}, []string{"result"})
	loadedAt = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "uplion_ratelimit_config_loaded_timestamp_seconds", Help: "When the rules in force were loaded",
	})
)

// Register adds the loader's metrics to a registry.
func Register(r prometheus.Registerer) { r.MustRegister(loads, loadedAt) }

// Rules holds the domains in force; Domains is safe to call from any goroutine.
type Rules struct {
	dir      string // "" for the built-in default
	fallback []byte
	domains  atomic.Pointer[map[string]*rules.Domain]
	seen     string
}

// New reads the rules once: from dir, or the built-in defaults when dir is "". An error means no
// rules could be loaded (a service must not start on a broken config).
func New(dir string, defaults []byte) (*Rules, error) {
	r := &Rules{dir: dir, fallback: defaults}
	if dir == "" {
		d, err := rules.Parse(defaults, "default.yaml")
		if err != nil {
			return nil, err
		}
		m := map[string]*rules.Domain{d.Name: d}
		r.domains.Store(&m)
		loadedAt.SetToCurrentTime()
		return r, nil
	}
	if _, err := r.Load(); err != nil {
		return nil, err
	}
	return r, nil
}

// Domains is the rules in force, by domain name.
func (r *Rules) Domains() map[string]*rules.Domain { return *r.domains.Load() }

func (r *Rules) files() ([]string, string, error) {
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		found, err := filepath.Glob(filepath.Join(r.dir, pattern))
		if err != nil {
			return nil, "", err
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	fingerprint := ""
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return nil, "", err
		}
		fingerprint += fmt.Sprintf("%s:%d:%d;", filepath.Base(f), st.ModTime().UnixNano(), st.Size())
	}
	return files, fingerprint, nil
}

// Load reads the files if they changed; true when new rules are in force.
func (r *Rules) Load() (bool, error) {
	if r.dir == "" {
		return false, nil
	}
	files, fingerprint, err := r.files()
	if err == nil && fingerprint == r.seen {
		return false, nil
	}
	r.seen = fingerprint
	var merged map[string]*rules.Domain
	if err == nil {
		merged, err = parseAll(files)
	}
	if err != nil {
		loads.WithLabelValues("error").Inc()
		if r.domains.Load() == nil {
			return false, err
		}
		slog.Error("rate-limit config rejected; the last good config stays in force", "error", err.Error())
		return false, nil
	}
	r.domains.Store(&merged)
	loads.WithLabelValues("ok").Inc()
	loadedAt.SetToCurrentTime()
	names := make([]string, 0, len(merged))
	for name := range merged {
		names = append(names, name)
	}
	sort.Strings(names)
	slog.Info("rate-limit config loaded", "domains", names)
	return true, nil
}

func parseAll(files []string) (map[string]*rules.Domain, error) {
	domains := make([]*rules.Domain, 0, len(files))
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		d, err := rules.Parse(text, filepath.Base(f))
		if err != nil {
			return nil, err
		}
		domains = append(domains, d)
	}
	return rules.Merge(domains)
}

// Watch reloads every interval until ctx ends.
func (r *Rules) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = r.Load()
		}
	}
}
