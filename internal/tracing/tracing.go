// Package tracing sets up OpenTelemetry traces for Krypton's daemons (krypton server, gateway,
// governance server): an OTLP/gRPC exporter, a sampler that callers cannot push into unbounded
// work, and an allowlist of span attributes enforced at export, so that no key material,
// plaintext, PIN or anchor URI can leave in a span whatever an instrumented library records.
//
// Tracing is off unless Config.Endpoint (or the standard OTEL_EXPORTER_OTLP_ENDPOINT /
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variable) names a receiver. Off, Start returns a nil
// *Tracing whose Provider is nil: the daemons then install no gRPC stats handler and start no
// span, so the hot path costs what it did before (docs/operations.md, "Traces").
package tracing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
)

// Span attributes Krypton sets. They are the only ones (with the few rpc.* ones of gRPC
// instrumentation, allowedKeys) that an exported span carries: names and numbers, never key
// material, plaintext, PINs or anchor URIs.
const (
	Tenant     = attribute.Key("krypton.tenant")
	Service    = attribute.Key("krypton.service")
	KeyVersion = attribute.Key("krypton.key.version")
	Op         = attribute.Key("krypton.op")
	BatchSize  = attribute.Key("krypton.batch.size")
	NodeID     = attribute.Key("krypton.node.id")
)

// allowedKeys are the span attribute keys that reach the exporter; every other attribute is
// dropped at export (redactingExporter). The rpc.* keys are those otelgrpc sets from the method
// name and the status code (both the current and the older semantic conventions).
var allowedKeys = map[attribute.Key]bool{
	Tenant: true, Service: true, KeyVersion: true, Op: true, BatchSize: true, NodeID: true,
	"rpc.system": true, "rpc.system.name": true, "rpc.service": true, "rpc.method": true,
	"rpc.grpc.status_code": true, "rpc.response.status_code": true,
}

// Defaults of Config.
const (
	DefaultSampleRatio      = 0.01
	DefaultRemoteParentRate = 100
)

// Config says where traces go and how many are kept.
type Config struct {
	// Endpoint is host:port of an OTLP/gRPC trace receiver (an OpenTelemetry Collector, say).
	// Empty means off, unless OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
	// is set, in which case the exporter takes that (OTEL_SDK_DISABLED=true keeps it off).
	Endpoint string
	// Insecure sends spans without TLS (a collector on loopback or in the same pod). Without it
	// the exporter uses TLS with the system's roots, or what OTEL_EXPORTER_OTLP_CERTIFICATE
	// and the other OTEL_EXPORTER_OTLP_* variables say.
	Insecure bool
	// SampleRatio is the share of traces this process starts (a call with no trusted parent)
	// that are kept, in [0, 1].
	SampleRatio float64
	// RemoteParentRate bounds how many calls per second whose trusted caller says "sampled"
	// are recorded; beyond it they are dropped. A caller cannot make a node record every call.
	RemoteParentRate float64
	// ServiceName is the resource's service.name (krypton-region, krypton-gateway,
	// krypton-governance); NodeID, if set, is its krypton.node.id.
	ServiceName string
	NodeID      string
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case math.IsNaN(c.SampleRatio) || c.SampleRatio < 0 || c.SampleRatio > 1:
		return fmt.Errorf("tracing: the sample ratio %v is outside [0, 1] (-trace-sample-ratio)", c.SampleRatio)
	case math.IsNaN(c.RemoteParentRate) || c.RemoteParentRate < 0:
		return fmt.Errorf("tracing: the remote parent rate %v must not be negative (-trace-remote-parent-rate)", c.RemoteParentRate)
	case strings.Contains(c.Endpoint, "://"):
		return fmt.Errorf("tracing: the OTLP endpoint %q must be host:port, without a scheme (-trace-otlp-endpoint; -trace-otlp-insecure for plaintext)", c.Endpoint)
	}
	return nil
}

// Enabled reports whether c turns tracing on (Endpoint, or the standard environment).
func (c Config) Enabled() bool {
	if c.Endpoint != "" {
		return true
	}
	if v, _ := strconv.ParseBool(os.Getenv("OTEL_SDK_DISABLED")); v {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// Tracing is a running tracer provider and its exporter. A nil *Tracing is tracing off.
type Tracing struct {
	tp *sdktrace.TracerProvider
}

// Start sets tracing up as cfg says, or returns nil (off) when cfg does not enable it. It does
// not wait for the receiver: spans are sent in the background, and dropped if it is away.
func Start(ctx context.Context, cfg Config) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, nil
	}
	client, err := newOTLPClient(cfg)
	if err != nil {
		return nil, err
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("tracing: the OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.ServiceName)}
	if cfg.NodeID != "" {
		attrs = append(attrs, NodeID.String(cfg.NodeID))
	}
	// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME come last, so that they win.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tracing: the resource: %w", err), exp.Shutdown(ctx))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(Sampler(cfg.SampleRatio, cfg.RemoteParentRate)),
		sdktrace.WithBatcher(redactingExporter{exp}),
	)
	return &Tracing{tp: tp}, nil
}

// Provider is the tracer provider to hand to the servers and clients, or nil when t is off.
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.tp
}

// ForceFlush sends the spans that have ended and not been sent yet; nil-safe.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Shutdown sends what is buffered and stops the exporter; nil-safe.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Sampler is Krypton's sampling decision, parent-based: a span whose parent is in this process
// follows its parent; a call served here that starts a trace (a server span with no trusted
// parent) is kept with probability ratio (by trace ID, so nodes with the same ratio agree), and
// nothing else starts a trace (background work: lease renewals, the governance feed, the
// gateway's refreshes); a call whose trusted caller (transport.ServerConfig,
// TraceTrust) sent a sampled trace context is kept, but at most remotePerSecond such calls a
// second (a burst of as many), and the rest are dropped. A caller's "not sampled" is followed.
func Sampler(ratio, remotePerSecond float64) sdktrace.Sampler {
	// A burst of a second's worth (at least one, unless the rate is 0: no remote parent is
	// followed at all).
	burst := int(remotePerSecond)
	if remotePerSecond > 0 && burst < 1 {
		burst = 1
	}
	return sdktrace.ParentBased(rootSampler{sdktrace.TraceIDRatioBased(ratio)},
		sdktrace.WithRemoteParentSampled(&limited{lim: rate.NewLimiter(rate.Limit(remotePerSecond), burst)}),
	)
}

// rootSampler samples server spans by its ratio sampler and drops every other root.
type rootSampler struct{ ratio sdktrace.Sampler }

func (r rootSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.Kind != trace.SpanKindServer {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop}
	}
	return r.ratio.ShouldSample(p)
}

func (r rootSampler) Description() string { return "ServerRoots{" + r.ratio.Description() + "}" }

// limited keeps sampled remote parents up to its limiter's rate.
type limited struct{ lim *rate.Limiter }

func (l *limited) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	ts := trace.SpanContextFromContext(p.ParentContext).TraceState()
	if !l.lim.Allow() {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: ts}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: ts}
}

func (l *limited) Description() string {
	return fmt.Sprintf("RateLimitedRemoteParent{%v/s}", float64(l.lim.Limit()))
}

// redactingExporter passes spans on with only the allowed attributes (allowedKeys), no events,
// no status message (a gRPC error's text could name what a caller sent) and links without
// attributes. The filter sits at export, off the calls' path, and holds whatever an
// instrumentation library records. The SDK has no attribute filter for spans; tracetest's stub
// is its supported way to build a ReadOnlySpan.
type redactingExporter struct{ sdktrace.SpanExporter }

func (r redactingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	out := make([]sdktrace.ReadOnlySpan, len(spans))
	for i, s := range spans {
		out[i] = Redact(s)
	}
	return r.SpanExporter.ExportSpans(ctx, out)
}

// Redact returns s with only what may be exported (see redactingExporter).
func Redact(s sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
	st := tracetest.SpanStubFromReadOnlySpan(s)
	kept := st.Attributes[:0:0]
	for _, a := range st.Attributes {
		if allowedKeys[a.Key] {
			kept = append(kept, a)
		}
	}
	st.DroppedAttributes += len(st.Attributes) - len(kept)
	st.Attributes = kept
	st.DroppedEvents += len(st.Events)
	st.Events = nil
	st.Status.Description = ""
	links := make([]sdktrace.Link, len(st.Links))
	for i, l := range st.Links {
		links[i] = sdktrace.Link{SpanContext: l.SpanContext}
	}
	st.Links = links
	return st.Snapshot()
}

// noopSpan is what StartSpan returns when tracing is off: it records nothing, and returning it
// allocates nothing.
var noopSpan = trace.SpanFromContext(context.Background())

// StartSpan starts a span named name under ctx's with t, or, when t is nil (tracing off),
// returns ctx and a span that records nothing, without allocating. Set attributes under
// span.IsRecording(), so that they cost nothing when off.
func StartSpan(ctx context.Context, t trace.Tracer, name string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noopSpan
	}
	return t.Start(ctx, name)
}

// StartSpanWith is StartSpan with options, for spans off the hot path (the options escape).
func StartSpanWith(ctx context.Context, t trace.Tracer, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noopSpan
	}
	return t.Start(ctx, name, opts...)
}

// Tracer returns tp's tracer for the named Krypton component, or nil when tp is nil.
func Tracer(tp trace.TracerProvider, component string) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer("github.com/kryptonkms/krypton/" + component)
}

// ShutdownTimeout is how long a daemon waits for its last spans to be sent on its way out.
const ShutdownTimeout = 5 * time.Second
