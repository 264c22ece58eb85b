package transport

import (
	"crypto/tls"
	"crypto/x509"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kryptonkms/krypton/internal/pki"
)

// CertificateExpiry names a certificate whose expiry a registry exports, as
// krypton_tls_cert_expiry_timestamp_seconds{certificate=Name}.
type CertificateExpiry struct {
	// Name is the certificate's role in the process: "node", "service" (a gateway's client
	// certificate), "server" (a gateway's front-end certificate).
	Name        string
	Certificate tls.Certificate
	// Source, if set, replaces Certificate: the expiry exported is that of
	// the certificate it holds at each scrape, so a reload updates it, and
	// its reloads are exported as krypton_tls_reloads_total{result}.
	Source *pki.Source
}

// NewRegistry returns the registry a region node, governance node or gateway serves on /metrics,
// with what every Krypton process exports beside its own metrics: the Go runtime collector
// (go_goroutines, go_memstats_*, go_gc_*), the process collector (process_resident_memory_bytes,
// process_open_fds, process_cpu_seconds_total; Linux only) and the expiry of each certificate
// in certs that holds one (a certificate without a leaf is left out).
//
// The expiry is read at each scrape, from the Source of an entry that has one.
func NewRegistry(certs ...CertificateExpiry) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(&certCollector{certs: certs})
	return reg
}

var (
	certExpiryDesc = prometheus.NewDesc("krypton_tls_cert_expiry_timestamp_seconds",
		"When this process's certificate expires (its NotAfter), in seconds since the Unix epoch, by the certificate's role (node, service, server). Renew it with krypton certs before then; the process reloads the files without a restart.",
		[]string{"certificate"}, nil)
	certReloadsDesc = prometheus.NewDesc("krypton_tls_reloads_total",
		"Reloads of this process's certificate files (on a change or SIGHUP), by result: ok (in use), refused (unparsable, a key that does not match, expired, another identity, not of the CA bundle: the previous certificates stay in use).",
		[]string{"result"}, nil)
)

// certCollector exports the certificates' expiry and their sources' reloads.
type certCollector struct{ certs []CertificateExpiry }

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- certExpiryDesc
	ch <- certReloadsDesc
}

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	var stats []*pki.ReloadStats
	for _, e := range c.certs {
		cert := e.Certificate
		if e.Source != nil {
			cert = e.Source.Current().Certificate
			if st := e.Source.Stats(); st != nil && !slices.Contains(stats, st) {
				stats = append(stats, st)
			}
		}
		leaf := cert.Leaf
		if leaf == nil && len(cert.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		if leaf == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), e.Name)
	}
	var ok, refused uint64
	for _, st := range stats {
		ok += st.OK.Load()
		refused += st.Refused.Load()
	}
	ch <- prometheus.MustNewConstMetric(certReloadsDesc, prometheus.CounterValue, float64(ok), "ok")
	ch <- prometheus.MustNewConstMetric(certReloadsDesc, prometheus.CounterValue, float64(refused), "refused")
}
