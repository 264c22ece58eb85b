package transport

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// CertificateExpiry names a certificate whose expiry a registry exports, as
// krypton_tls_cert_expiry_timestamp_seconds{certificate=Name}.
type CertificateExpiry struct {
	// Name is the certificate's role in the process: "node", "service" (a gateway's client
	// certificate), "server" (a gateway's front-end certificate).
	Name        string
	Certificate tls.Certificate
}

// NewRegistry returns the registry a region node, governance node or gateway serves on /metrics,
// with what every Krypton process exports beside its own metrics: the Go runtime collector
// (go_goroutines, go_memstats_*, go_gc_*), the process collector (process_resident_memory_bytes,
// process_open_fds, process_cpu_seconds_total; Linux only) and the expiry of each certificate
// in certs that holds one (a certificate without a leaf is left out).
//
// The expiry is read once: the process loads its certificates at start and keeps them.
func NewRegistry(certs ...CertificateExpiry) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	expiry := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "krypton_tls_cert_expiry_timestamp_seconds",
		Help: "When this process's certificate expires (its NotAfter), in seconds since the Unix epoch, by the certificate's role (node, service, server). Renew it with krypton certs before then.",
	}, []string{"certificate"})
	for _, c := range certs {
		leaf := c.Certificate.Leaf
		if leaf == nil && len(c.Certificate.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(c.Certificate.Certificate[0])
		}
		if leaf == nil {
			continue
		}
		expiry.WithLabelValues(c.Name).Set(float64(leaf.NotAfter.Unix()))
	}
	reg.MustRegister(expiry)
	return reg
}
