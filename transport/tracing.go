package transport

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// tracePropagator carries the W3C trace context (traceparent, tracestate) in gRPC metadata, and
// nothing else: no baggage, which a caller could fill with what it likes.
var tracePropagator = propagation.TraceContext{}

// serverTracing is the stats handler that traces a server's calls (docs/operations.md, "Traces"):
// one server span a call, named after the method. public makes every caller's trace context a
// link, never a parent (the gateway's front end: applications are not trusted to decide what a
// gateway records); otherwise only a caller with a verified certificate may be the parent, and
// the sampler bounds how many such parents are followed (tracing.Sampler). otelgrpc's metrics
// are off: Krypton's own (Metrics) count the calls.
func serverTracing(tp trace.TracerProvider, public bool) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithPropagators(tracePropagator),
		otelgrpc.WithPublicEndpointFn(func(ctx context.Context, _ *stats.RPCTagInfo) bool {
			return public || peerIdentity(ctx).err != nil
		}),
	))
}

// clientTracing traces a client's calls and sends the call's trace context to the server.
func clientTracing(tp trace.TracerProvider) grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithPropagators(tracePropagator),
	))
}

// ServerTracing is the server option of NewServer's tracing for a gRPC server made otherwise
// (the gateway's Unix socket); nil tp gives no option at all.
func ServerTracing(tp trace.TracerProvider, public bool) []grpc.ServerOption {
	if tp == nil {
		return nil
	}
	return []grpc.ServerOption{serverTracing(tp, public)}
}
