package tracing_test

import (
	"context"
	"math"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/internal/tracing"
)

func remoteParent(sampled bool) context.Context {
	var flags trace.TraceFlags
	if sampled {
		flags = trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: flags, Remote: true,
	})
	return trace.ContextWithRemoteSpanContext(context.Background(), sc)
}

// TestSamplerBoundsRemoteParents: a caller whose every call says "sampled" gets at most the
// configured number of calls recorded at once (the burst), not all of them; "not sampled" is
// followed; roots are sampled by ratio, and only server spans start a trace.
func TestSamplerBoundsRemoteParents(t *testing.T) {
	s := tracing.Sampler(1, 3)
	kept := 0
	start := time.Now()
	for range 1000 {
		r := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: remoteParent(true), TraceID: trace.TraceID{1}, Name: "x", Kind: trace.SpanKindServer})
		if r.Decision == sdktrace.RecordAndSample {
			kept++
		}
	}
	// The burst of 3, and 3 more for every second the loop took (however busy the machine).
	if most := 3 + int(math.Ceil(3*time.Since(start).Seconds())); kept < 3 || kept > most {
		t.Errorf("%d of 1000 calls with a sampled remote parent recorded, want 3 to %d (the limit)", kept, most)
	}
	if r := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: remoteParent(false), TraceID: trace.TraceID{1}, Kind: trace.SpanKindServer}); r.Decision != sdktrace.Drop {
		t.Errorf("a not-sampled remote parent: %v", r.Decision)
	}
	root := func(s sdktrace.Sampler, kind trace.SpanKind) sdktrace.SamplingDecision {
		return s.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: trace.TraceID{9, 9}, Kind: kind}).Decision
	}
	if d := root(s, trace.SpanKindServer); d != sdktrace.RecordAndSample {
		t.Errorf("a server root at ratio 1: %v", d)
	}
	for _, k := range []trace.SpanKind{trace.SpanKindClient, trace.SpanKindInternal} {
		if d := root(s, k); d != sdktrace.Drop {
			t.Errorf("a %v root (background work): %v, want Drop", k, d)
		}
	}
	if r := tracing.Sampler(1, 0).ShouldSample(sdktrace.SamplingParameters{ParentContext: remoteParent(true), TraceID: trace.TraceID{1}, Kind: trace.SpanKindServer}); r.Decision != sdktrace.Drop {
		t.Errorf("a sampled remote parent with a rate of 0: %v, want Drop", r.Decision)
	}
	if d := root(tracing.Sampler(0, 3), trace.SpanKindServer); d != sdktrace.Drop {
		t.Errorf("a server root at ratio 0: %v", d)
	}
}

// TestRedact: only allowed attributes, no events, no status message, links without attributes.
func TestRedact(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	_, span := tp.Tracer("t").Start(context.Background(), "s",
		trace.WithLinks(trace.Link{SpanContext: remoteParentSC(), Attributes: []attribute.KeyValue{attribute.String("anchor", "kms://secret")}}))
	span.SetAttributes(tracing.Tenant.String("acme"), attribute.String("plaintext", "c2VjcmV0"), attribute.String("server.address", "10.0.0.1"))
	span.AddEvent("message", trace.WithAttributes(attribute.String("body", "secret")))
	span.SetStatus(codes.Error, "region: anchor kms://user:pass@host refused")
	span.End()
	out := tracing.Redact(rec.Ended()[0])
	if got := out.Attributes(); len(got) != 1 || got[0].Key != tracing.Tenant {
		t.Errorf("attributes %v, want krypton.tenant only", got)
	}
	if out.DroppedAttributes() != 2 {
		t.Errorf("%d attributes counted as dropped, want 2", out.DroppedAttributes())
	}
	if len(out.Events()) != 0 || out.Status().Description != "" || out.Status().Code != codes.Error {
		t.Errorf("events %v, status %v: want none, and the code without its message", out.Events(), out.Status())
	}
	if ls := out.Links(); len(ls) != 1 || len(ls[0].Attributes) != 0 || !ls[0].SpanContext.IsValid() {
		t.Errorf("links %v, want one, without attributes", ls)
	}
}

func remoteParentSC() trace.SpanContext { return trace.SpanContextFromContext(remoteParent(true)) }

// TestConfig: off unless an endpoint is named; bad values are refused by flag name.
func TestConfig(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tr, err := tracing.Start(context.Background(), tracing.Config{SampleRatio: 1})
	if tr != nil || err != nil || tr.Provider() != nil {
		t.Errorf("no endpoint: %v, %v; want off", tr, err)
	}
	for _, c := range []tracing.Config{{SampleRatio: 2}, {SampleRatio: -1}, {RemoteParentRate: -1}, {Endpoint: "http://collector:4317"}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestOffAllocatesNothing: with tracing off (a nil tracer) the spans the hot path starts cost no
// allocation (gateway's BenchmarkGenerateDataKey compares whole calls; docs/operations.md).
func TestOffAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() {
		c, span := tracing.StartSpan(ctx, nil, "region.key")
		if span.IsRecording() {
			span.SetAttributes(tracing.Tenant.String("acme"), tracing.BatchSize.Int(1))
		}
		_ = c
		span.End()
	}); n != 0 {
		t.Errorf("%v allocations a span with tracing off, want 0", n)
	}
}
