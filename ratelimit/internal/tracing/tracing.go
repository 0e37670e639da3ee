// Package tracing sets up OpenTelemetry traces for the rate-limit service the way uplion's Python
// services do (uplion.core.tracing): off unless OpenTelemetry's own setting names a collector
// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; OTLP over gRPC, an http://
// address is plaintext). Then spans go through a batch span processor to that collector, under the
// service name OTEL_SERVICE_NAME (default uplion-ratelimit), sampled as OTEL_TRACES_SAMPLER says
// (default: follow the parent, Envoy's decision). Context comes in as W3C trace context
// (traceparent, tracestate). When off nothing is created: the service gets no tracer at all.
package tracing

import (
	"context"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// DefaultServiceName is the resource's service.name unless OTEL_SERVICE_NAME says otherwise.
const DefaultServiceName = "uplion-ratelimit"

// EndpointSettings are the variables that turn tracing on (either names the collector).
var EndpointSettings = []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"}

// Configured reports whether the environment (getenv) names a collector.
func Configured(getenv func(string) string) bool {
	for _, name := range EndpointSettings {
		if getenv(name) != "" {
			return true
		}
	}
	return false
}

// Setup installs the OTLP/gRPC exporter behind a batch span processor when a collector is
// configured, and returns the provider (nil when tracing is off). The exporter connects lazily: a
// collector that is down costs dropped spans, never a failed start. Shut the provider down last,
// to export what it still holds.
func Setup(ctx context.Context, getenv func(string) string) (*sdktrace.TracerProvider, error) {
	if !Configured(getenv) {
		return nil, nil
	}
	exporter, err := otlptracegrpc.New(ctx) // endpoint, TLS, headers, timeout: OTEL_EXPORTER_OTLP_*
	if err != nil {
		return nil, err
	}
	// later detectors win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the default name
	res, err := resource.New(ctx, resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", DefaultServiceName)), resource.WithFromEnv())
	if errors.Is(err, resource.ErrPartialResource) { // a malformed OTEL_RESOURCE_ATTRIBUTES: the rest is kept
		slog.Warn("some resource attributes ignored", "error", err.Error())
	} else if err != nil {
		return nil, err
	}
	// the sampler: OTEL_TRACES_SAMPLER (parent-based, always on, by default); the batcher: OTEL_BSP_*
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	// the SDK's errors (a collector that cannot be reached: once per failed batch) as the service's
	// JSON log lines, not the standard logger's plain text
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		slog.Warn("traces not exported", "error", err.Error())
	}))
	return tp, nil
}
