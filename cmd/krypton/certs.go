package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/kryptonkms/krypton/internal/pki"
)

// Certificate files in a directory made by `krypton certs`: one pair per principal, named so that a
// person can tell them apart at a glance.
const (
	caCertFile = "ca.pem"
	caKeyFile  = "ca-key.pem"
)

func nodeCertFiles(dir, id string) (string, string) {
	return filepath.Join(dir, "node-"+id+".pem"), filepath.Join(dir, "node-"+id+"-key.pem")
}

func serviceCertFiles(dir, tenant, service string) (string, string) {
	base := "service-" + tenant + "-" + service
	return filepath.Join(dir, base+".pem"), filepath.Join(dir, base+"-key.pem")
}

func operatorCertFiles(dir, name string) (string, string) {
	return filepath.Join(dir, "operator-"+name+".pem"), filepath.Join(dir, "operator-"+name+"-key.pem")
}

func certsCommand() *command {
	var dir *string
	dirFlag := func(fs *flag.FlagSet) { dir = fs.String("dir", "certs", "directory of the CA and certificates") }
	return &command{
		name:     "certs",
		synopsis: "make a development CA and node, service and operator certificates",
		help: "Certificates for development and tests, from a throwaway CA, so that no one runs Krypton without TLS by accident.\n" +
			"Production deployments may use their own CA, as long as certificates carry Krypton's SPIFFE URIs.",
		sub: []*command{
			{
				name: "ca", synopsis: "create a CA in -dir",
				flags: dirFlag,
				run: func(_ context.Context, s *streams, _ *flag.FlagSet) error {
					ca, err := createCA(*dir)
					if err != nil {
						return err
					}
					fmt.Fprintf(s.out, "created CA %q in %s\n", ca.Certificate().Subject.CommonName, *dir)
					return nil
				},
			},
			nodeCertCommand(),
			{
				name: "service", synopsis: "issue a caller certificate naming a tenant and service", usage: "<tenant> <service>",
				flags: dirFlag,
				run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
					if fs.NArg() != 2 {
						return usagef("certs service: want <tenant> <service>")
					}
					ca, err := loadCA(*dir)
					if err != nil {
						return err
					}
					cert, err := ca.IssueService(fs.Arg(0), fs.Arg(1), 0)
					if err != nil {
						return err
					}
					c, k := serviceCertFiles(*dir, fs.Arg(0), fs.Arg(1))
					return writeCert(s.out, cert, c, k)
				},
			},
			{
				name: "operator", synopsis: "issue an operator certificate", usage: "<name>",
				flags: dirFlag,
				run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
					if fs.NArg() != 1 {
						return usagef("certs operator: want <name>")
					}
					ca, err := loadCA(*dir)
					if err != nil {
						return err
					}
					cert, err := ca.IssueOperator(fs.Arg(0), 0)
					if err != nil {
						return err
					}
					c, k := operatorCertFiles(*dir, fs.Arg(0))
					return writeCert(s.out, cert, c, k)
				},
			},
		},
	}
}

func nodeCertCommand() *command {
	var dir, ips, dns, region *string
	return &command{
		name: "node", synopsis: "issue a node certificate", usage: "<node-id>",
		flags: func(fs *flag.FlagSet) {
			dir = fs.String("dir", "certs", "directory of the CA and certificates")
			region = fs.String("region", "", "the region the node belongs to, named in its certificate (spiffe://krypton/region/<region>/node/<id>): needed by region nodes that follow governance")
			ips = fs.String("ip", "", "extra IP addresses the node is reached at, comma-separated (127.0.0.1 is always included)")
			dns = fs.String("dns", "", "extra DNS names, comma-separated (localhost is always included)")
		},
		run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() != 1 {
				return usagef("certs node: want <node-id>")
			}
			opts := pki.NodeOptions{DNSNames: splitList(*dns), Region: *region}
			for _, v := range splitList(*ips) {
				ip := net.ParseIP(v)
				if ip == nil {
					return usagef("certs node: -ip %q is not an IP address", v)
				}
				opts.IPs = append(opts.IPs, ip)
			}
			ca, err := loadCA(*dir)
			if err != nil {
				return err
			}
			cert, err := ca.IssueNode(fs.Arg(0), opts)
			if err != nil {
				return err
			}
			c, k := nodeCertFiles(*dir, fs.Arg(0))
			return writeCert(s.out, cert, c, k)
		},
	}
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// createCA makes a new CA in dir and refuses to replace an existing one: every certificate issued
// under the old one would stop working.
func createCA(dir string) (*pki.CA, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	if _, err := os.Stat(certPath); err == nil {
		return nil, fmt.Errorf("certs: %s already exists; remove it to make a new CA", certPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	ca, err := pki.NewCA("krypton development CA", 0)
	if err != nil {
		return nil, err
	}
	if err := ca.WriteFiles(certPath, keyPath); err != nil {
		return nil, err
	}
	return ca, nil
}

func loadCA(dir string) (*pki.CA, error) {
	ca, err := pki.LoadCA(filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, fmt.Errorf("certs: loading the CA from %s (make one with `krypton certs ca -dir %s`): %w", dir, dir, err)
	}
	return ca, nil
}

func writeCert(w io.Writer, cert *pki.Certificate, certPath, keyPath string) error {
	if err := cert.WriteFiles(certPath, keyPath); err != nil {
		return err
	}
	id, err := cert.Identity()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "issued %s\n  certificate %s\n  key         %s\n", id, certPath, keyPath)
	return err
}
