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

func governanceCertFiles(dir, id string) (string, string) {
	return filepath.Join(dir, "governance-"+id+".pem"), filepath.Join(dir, "governance-"+id+"-key.pem")
}

func gatewayCertFiles(dir, tenant, name string) (string, string) {
	base := "gateway-" + tenant + "-" + name
	return filepath.Join(dir, base+".pem"), filepath.Join(dir, base+"-key.pem")
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
		synopsis: "make a development CA and region node, governance node, gateway, service and operator certificates",
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
			governanceCertCommand(),
			gatewayCertCommand(),
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

// Each role has its own kind of certificate (internal/pki): a region node's names its region, a
// governance node's says it is governance's, a gateway's names its tenant. None is accepted where
// another is expected, so a gateway that is broken into holds nothing a node listener accepts.

func nodeCertCommand() *command {
	var region *string
	return serverCertCommand(serverCertSpec{
		name: "node", synopsis: "issue a region node certificate naming its region", usage: "-region <region> <node-id>",
		args: []string{"<node-id>"},
		flags: func(fs *flag.FlagSet) {
			region = fs.String("region", "", "the region the node belongs to, named in its certificate (spiffe://krypton/region/<region>/node/<id>); required: peers, governance's feed and clients admit only nodes of the region")
		},
		issue: func(ca *pki.CA, args []string, opts pki.NodeOptions) (*pki.Certificate, error) {
			if *region == "" {
				return nil, usagef("certs node: -region is required (the region the node belongs to); a governance node's certificate is made by `krypton certs governance <node-id>`")
			}
			opts.Region = *region
			return ca.IssueNode(args[0], opts)
		},
		files: func(dir string, args []string) (string, string) { return nodeCertFiles(dir, args[0]) },
	})
}

func governanceCertCommand() *command {
	return serverCertCommand(serverCertSpec{
		name: "governance", synopsis: "issue a governance node certificate", usage: "<node-id>",
		args: []string{"<node-id>"},
		issue: func(ca *pki.CA, args []string, opts pki.NodeOptions) (*pki.Certificate, error) {
			return ca.IssueGovernance(args[0], opts)
		},
		files: func(dir string, args []string) (string, string) { return governanceCertFiles(dir, args[0]) },
	})
}

func gatewayCertCommand() *command {
	return serverCertCommand(serverCertSpec{
		name: "gateway", synopsis: "issue a gateway's server certificate for a tenant", usage: "<tenant> <name>",
		help: "The certificate the gateway's gRPC and KMIP front ends present to the tenant's services " +
			"(krypton gateway -server-cert): spiffe://krypton/tenant/<tenant>/gateway/<name>. It is a server certificate only; " +
			"the gateway calls the region with a service certificate of its tenant.",
		args: []string{"<tenant>", "<name>"},
		issue: func(ca *pki.CA, args []string, opts pki.NodeOptions) (*pki.Certificate, error) {
			return ca.IssueGateway(args[0], args[1], opts)
		},
		files: func(dir string, args []string) (string, string) { return gatewayCertFiles(dir, args[0], args[1]) },
	})
}

// serverCertSpec describes a `krypton certs` subcommand issuing a server certificate (with -ip and
// -dns for the names it is reached by).
type serverCertSpec struct {
	name, synopsis, usage, help string
	args                        []string
	flags                       func(fs *flag.FlagSet)
	issue                       func(ca *pki.CA, args []string, opts pki.NodeOptions) (*pki.Certificate, error)
	files                       func(dir string, args []string) (cert, key string)
}

func serverCertCommand(spec serverCertSpec) *command {
	var dir, ips, dns *string
	return &command{
		name: spec.name, synopsis: spec.synopsis, usage: spec.usage, help: spec.help,
		flags: func(fs *flag.FlagSet) {
			dir = fs.String("dir", "certs", "directory of the CA and certificates")
			if spec.flags != nil {
				spec.flags(fs)
			}
			ips = fs.String("ip", "", "extra IP addresses the server is reached at, comma-separated (127.0.0.1 is always included)")
			dns = fs.String("dns", "", "extra DNS names, comma-separated (localhost is always included)")
		},
		run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() != len(spec.args) {
				return usagef("certs %s: want %s%s", spec.name, strings.Join(spec.args, " "), flagsFirstHint(fs))
			}
			opts := pki.NodeOptions{DNSNames: splitList(*dns)}
			for _, v := range splitList(*ips) {
				ip := net.ParseIP(v)
				if ip == nil {
					return usagef("certs %s: -ip %q is not an IP address", spec.name, v)
				}
				opts.IPs = append(opts.IPs, ip)
			}
			ca, err := loadCA(*dir)
			if err != nil {
				return err
			}
			cert, err := spec.issue(ca, fs.Args(), opts)
			if err != nil {
				return err
			}
			c, k := spec.files(*dir, fs.Args())
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
