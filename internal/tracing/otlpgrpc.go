package tracing

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// otlpClient sends spans to an OTLP/gRPC receiver (the collector's TraceService.Export); the
// library's otlptrace exporter turns the SDK's spans into OTLP and batches them around it.
//
// Written here rather than taken from otlptracegrpc on purpose: that package registers gRPC's
// gzip compressor for the whole process (through its config package), and from then on every
// gRPC call Krypton makes carries a grpc-accept-encoding header the server parses, 3 to 4
// allocations more per wrap through a gateway whether tracing is on or not (measured with
// gateway's BenchmarkGenerateDataKey). Tracing off must cost nothing.
type otlpClient struct {
	endpoint string
	creds    credentials.TransportCredentials
	headers  metadata.MD
	timeout  time.Duration
	conn     *grpc.ClientConn
	svc      collectorpb.TraceServiceClient
}

// exportTimeout bounds one export when OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT does not.
const exportTimeout = 10 * time.Second

// newOTLPClient reads the receiver's address and TLS from cfg and the standard OTLP variables
// (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _INSECURE, _CERTIFICATE, _HEADERS, _TIMEOUT; the
// traces-specific one wins). cfg.Endpoint (host:port) wins over the variables' endpoint.
func newOTLPClient(cfg Config) (*otlpClient, error) {
	c := &otlpClient{timeout: exportTimeout, headers: metadata.MD{}}
	plain := cfg.Insecure
	if v, ok := otlpEnv("INSECURE"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_INSECURE %q is not true or false", v)
		}
		plain = plain || b
	}
	c.endpoint = cfg.Endpoint
	if c.endpoint == "" {
		v, _ := otlpEnv("ENDPOINT")
		u, err := url.Parse(v)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_ENDPOINT %q is not a URL such as http://collector:4317", v)
		}
		c.endpoint = u.Host
		if u.Scheme == "http" {
			plain = true
		}
	}
	if plain {
		c.creds = insecure.NewCredentials()
	} else {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if path, ok := otlpEnv("CERTIFICATE"); ok {
			pem, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_CERTIFICATE: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_CERTIFICATE %s holds no PEM certificate", path)
			}
		}
		c.creds = credentials.NewTLS(tc)
	}
	if v, ok := otlpEnv("HEADERS"); ok {
		for _, kv := range strings.Split(v, ",") {
			k, val, found := strings.Cut(kv, "=")
			k = strings.TrimSpace(k)
			if !found || k == "" {
				return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_HEADERS must be key=value pairs separated by commas")
			}
			if dv, err := url.QueryUnescape(strings.TrimSpace(val)); err == nil {
				val = dv
			}
			c.headers.Append(strings.ToLower(k), val)
		}
	}
	if v, ok := otlpEnv("TIMEOUT"); ok {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_TIMEOUT %q is not a positive number of milliseconds", v)
		}
		c.timeout = time.Duration(ms) * time.Millisecond
	}
	return c, nil
}

// otlpEnv returns OTEL_EXPORTER_OTLP_TRACES_<name>, or else OTEL_EXPORTER_OTLP_<name>.
func otlpEnv(name string) (string, bool) {
	if v := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_" + name); v != "" {
		return v, true
	}
	v := os.Getenv("OTEL_EXPORTER_OTLP_" + name)
	return v, v != ""
}

var _ otlptrace.Client = (*otlpClient)(nil)

// Start makes the connection; gRPC connects on the first export and reconnects by itself.
func (c *otlpClient) Start(context.Context) error {
	conn, err := grpc.NewClient(c.endpoint, grpc.WithTransportCredentials(c.creds))
	if err != nil {
		return fmt.Errorf("tracing: the OTLP receiver %s: %w", c.endpoint, err)
	}
	c.conn, c.svc = conn, collectorpb.NewTraceServiceClient(conn)
	return nil
}

// Stop closes the connection.
func (c *otlpClient) Stop(context.Context) error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// UploadTraces sends one batch. A failed batch is dropped (the SDK reports it to otel's error
// handler, which the daemons log): tracing never holds up or retries against Krypton's calls.
func (c *otlpClient) UploadTraces(ctx context.Context, spans []*tracepb.ResourceSpans) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if len(c.headers) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, c.headers)
	}
	resp, err := c.svc.Export(ctx, &collectorpb.ExportTraceServiceRequest{ResourceSpans: spans})
	if err != nil {
		return fmt.Errorf("tracing: exporting to %s: %w", c.endpoint, err)
	}
	if ps := resp.GetPartialSuccess(); ps != nil && ps.GetRejectedSpans() > 0 {
		return fmt.Errorf("tracing: the receiver rejected %d spans: %s", ps.GetRejectedSpans(), ps.GetErrorMessage())
	}
	return nil
}
