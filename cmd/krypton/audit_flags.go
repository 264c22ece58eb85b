package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/pki"
)

// Audit to a SIEM. Every server command (krypton server, krypton governance server, krypton dev)
// declares auditFlags and, if -audit-syslog is set, forwards its audit log to the receiver:
//
//	var a auditFlags
//	a.declare(fs)
//	...
//	sc, err := a.syslogConfig(log) // nil, nil without -audit-syslog
//	cfg.AuditSyslog = sc           // the node starts audit.NewSyslog(*sc) with its own metrics
//	                               // registry, passes Forward to audit.Options.Forward, and
//	                               // closes the sink after its audit log
//
// or, for a command that owns its audit log, sink, err := a.syslog(log, registry).

// auditFlags are the flags that send a server's audit log to a syslog receiver.
type auditFlags struct {
	addr       string
	ca         string
	cert       string
	key        string
	serverName string
	queue      int
}

// declare adds -audit-syslog, -audit-syslog-ca, -audit-syslog-cert, -audit-syslog-key,
// -audit-syslog-server-name and -audit-syslog-queue to fs.
func (f *auditFlags) declare(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "audit-syslog", "", "host:port of a syslog receiver (RFC 5424 over TLS, e.g. a SIEM on port 6514) that gets a copy of every audit event; empty: the audit file only")
	fs.StringVar(&f.ca, "audit-syslog-ca", "", "PEM file of the CA(s) that sign the syslog receiver's certificate; empty: the system's")
	fs.StringVar(&f.cert, "audit-syslog-cert", "", "PEM file of a client certificate for a receiver that requires mutual TLS (with -audit-syslog-key)")
	fs.StringVar(&f.key, "audit-syslog-key", "", "PEM file of the client certificate's private key")
	fs.StringVar(&f.serverName, "audit-syslog-server-name", "", "name the receiver's certificate must carry, if not the host of -audit-syslog")
	fs.IntVar(&f.queue, "audit-syslog-queue", 4096, "audit events held while the receiver is unreachable; beyond that the oldest are dropped from the copy (never from the file) and counted in krypton_audit_syslog_dropped_total")
}

// syslogConfig returns the sink configuration the flags describe (Registerer unset: the node
// registers the sink's metrics where its own are), or nil without -audit-syslog. Errors name the
// flag at fault.
func (f *auditFlags) syslogConfig(log *slog.Logger) (*audit.SyslogConfig, error) {
	cfg, ok, err := f.config(log)
	if err != nil || !ok {
		return nil, err
	}
	return &cfg, nil
}

func (f *auditFlags) config(log *slog.Logger) (cfg audit.SyslogConfig, ok bool, err error) {
	if f.addr == "" {
		if f.ca != "" || f.cert != "" || f.key != "" || f.serverName != "" {
			return cfg, false, usagef("-audit-syslog-ca, -audit-syslog-cert, -audit-syslog-key and -audit-syslog-server-name need -audit-syslog")
		}
		return cfg, false, nil
	}
	if f.queue <= 0 {
		return cfg, false, usagef("-audit-syslog-queue must be positive")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	if f.ca != "" {
		if tc.RootCAs, err = pki.LoadCertPool(f.ca); err != nil {
			return cfg, false, fmt.Errorf("-audit-syslog-ca: %w", err)
		}
	}
	switch {
	case f.cert != "" && f.key != "":
		c, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return cfg, false, fmt.Errorf("-audit-syslog-cert/-audit-syslog-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	case f.cert != "" || f.key != "":
		return cfg, false, usagef("-audit-syslog-cert and -audit-syslog-key go together")
	}
	cfg = audit.SyslogConfig{Addr: f.addr, TLS: tc, QueueSize: f.queue, Logger: log}
	if err := cfg.Validate(); err != nil {
		return cfg, false, usagef("-audit-syslog: %v", err)
	}
	return cfg, true, nil
}

// syslog starts the sink the flags describe, or returns nil without -audit-syslog. It connects in
// the background (a receiver that is down delays nothing). The caller passes its Forward method
// to the audit log (audit.Options.Forward) and closes it after the log.
func (f *auditFlags) syslog(log *slog.Logger, reg prometheus.Registerer) (*audit.Syslog, error) {
	cfg, ok, err := f.config(log)
	if err != nil || !ok {
		return nil, err
	}
	cfg.Registerer = reg
	return audit.NewSyslog(cfg)
}
