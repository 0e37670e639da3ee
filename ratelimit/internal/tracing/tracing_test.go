package tracing

import (
	"context"
	"os"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestOffUnlessACollectorIsNamed(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, true},
	} {
		if got := Configured(env(tc.env)); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.env, got, tc.want)
		}
	}
	tp, err := Setup(context.Background(), env(map[string]string{}))
	if tp != nil || err != nil {
		t.Fatalf("off: %v %v", tp, err)
	}
}

func serviceName(t *testing.T, tp *sdktrace.TracerProvider) string {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp.RegisterSpanProcessor(rec)
	_, span := tp.Tracer("test").Start(context.Background(), "s")
	span.End()
	v, _ := rec.Ended()[0].Resource().Set().Value(attribute.Key("service.name"))
	return v.AsString()
}

// On: a provider named uplion-ratelimit unless OTEL_SERVICE_NAME says otherwise, and the W3C
// propagator. Nothing listens at the endpoint: the exporter connects lazily, so Setup still succeeds.
func TestOnNamesTheServiceAndPropagatesW3CTraceContext(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	globalTP, globalProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	defer func() { otel.SetTracerProvider(globalTP); otel.SetTextMapPropagator(globalProp) }()
	for _, tc := range []struct{ name, want string }{{"", DefaultServiceName}, {"rls-eu", "rls-eu"}} {
		t.Setenv("OTEL_SERVICE_NAME", tc.name)
		tp, err := Setup(context.Background(), os.Getenv)
		if err != nil || tp == nil {
			t.Fatalf("%v %v", tp, err)
		}
		if got := serviceName(t, tp); got != tc.want {
			t.Errorf("service.name %q, want %q", got, tc.want)
		}
		shutdown, cancel := context.WithTimeout(context.Background(), 0)
		_ = tp.Shutdown(shutdown) // the span cannot be exported: Shutdown gives up at its deadline
		cancel()
	}
	if _, ok := otel.GetTextMapPropagator().(propagation.TraceContext); !ok {
		t.Errorf("propagator %T", otel.GetTextMapPropagator())
	}
}
