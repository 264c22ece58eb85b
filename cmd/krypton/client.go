package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
)

// The client commands (members, operator, tenant, key, wrap, ...) are thin gRPC clients of one
// region node. They share the connection flags below, -format, and, for writes, -request-id.

const defaultAPIAddr = "127.0.0.1:7400"

const operatorCertHelp = "Needs an OPERATOR certificate (`krypton certs operator <name>`): -client-cert, -client-key and -ca-cert, or KRYPTON_CLIENT_CERT, KRYPTON_CLIENT_KEY and KRYPTON_CA_CERT; or, on a server that accepts OIDC, a bearer token (-token-file or KRYPTON_TOKEN, else the one `krypton login` cached) and -ca-cert."

const serviceCertHelp = "Needs a SERVICE certificate naming the tenant and service (`krypton certs service <tenant> <service>`): -client-cert, -client-key and -ca-cert, or KRYPTON_CLIENT_CERT, KRYPTON_CLIENT_KEY and KRYPTON_CA_CERT. Operator certificates cannot use keys."

// clientFlags are the flags of one client command invocation.
type clientFlags struct {
	kind       pki.Kind // the certificate kind the command needs
	server     pki.Kind // the kind of server it talks to: a region node, or governance
	write      bool     // whether the command changes state (and so takes -request-id)
	addr       string
	caCert     string
	clientCert string
	clientKey  string
	timeout    time.Duration
	format     string
	raw        bool // the command has a -format raw (clientSpec.raw)
	requestID  string
	tokenFile  string // operator commands: an OIDC bearer token instead of a certificate
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", defaultAPIAddr, "host:port of a region node's API (any node)")
	fs.StringVar(&c.caCert, "ca-cert", "", "PEM file of the CA that signed the node certificates")
	who := "an operator"
	if c.kind == pki.KindService {
		who = "a service (tenant/service)"
	}
	fs.StringVar(&c.clientCert, "client-cert", "", "PEM file of "+who+" certificate")
	fs.StringVar(&c.clientKey, "client-key", "", "PEM file of the client certificate's private key")
	if c.kind == pki.KindOperator {
		fs.StringVar(&c.tokenFile, "token-file", "", "file holding an OIDC bearer token to use instead of -client-cert/-client-key (read before every call); the token itself may be given as KRYPTON_TOKEN")
	}
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of the whole command")
	fs.StringVar(&c.format, "format", formatText, formatHelp(c.raw))
	if c.write {
		fs.StringVar(&c.requestID, "request-id", "", "idempotency key of the change (default: a fresh random one); repeat a command with the same -request-id to retry it safely")
	}
}

// clientCommand builds a command that talks to a node: it declares the connection flags, then the
// command's own, and runs body with a dialled connection and a context bounded by -timeout.
type clientSpec struct {
	name, synopsis, usage, help string
	aliases                     []string // other names of the command (command.aliases)
	kind                        pki.Kind
	// server is the kind of server the command talks to; 0 means a region node (KindNode).
	server pki.Kind
	write  bool
	raw    bool // the command prints bytes with -format raw
	flags  func(fs *flag.FlagSet)
	// check validates arguments and flags before anything is dialled; nil for none.
	check func(fs *flag.FlagSet) error
	body  func(ctx context.Context, s *streams, fs *flag.FlagSet, cl *apiClient) error
}

// apiClient is one command's connection and settings.
type apiClient struct {
	*clientFlags
	conn *grpc.ClientConn
	cfg  transport.ClientConfig
}

func clientCommand(spec clientSpec) *command {
	cf := &clientFlags{kind: spec.kind, server: spec.server, write: spec.write, raw: spec.raw}
	if cf.server == 0 {
		cf.server = pki.KindNode
	}
	help := spec.help
	switch spec.kind {
	case pki.KindOperator:
		help += "\n\n" + operatorCertHelp
	case pki.KindService:
		help += "\n\n" + serviceCertHelp
	}
	return &command{
		name: spec.name, aliases: spec.aliases, synopsis: spec.synopsis, usage: spec.usage, help: help,
		flags: func(fs *flag.FlagSet) {
			cf.register(fs)
			if spec.flags != nil {
				spec.flags(fs)
			}
		},
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			if err := refuseEnv(); err != nil {
				return err
			}
			if err := checkFormat(cf.format, cf.raw); err != nil {
				return err
			}
			if cf.format == formatRaw && isTerminal(s.out) {
				return usagef("-format raw writes bytes, not text: redirect stdout to a file or a pipe")
			}
			if cf.timeout <= 0 {
				return usagef("-timeout must be positive")
			}
			if cf.write {
				if cf.requestID == "" {
					cf.requestID = newRequestID()
				} else if err := checkRequestID(cf.requestID); err != nil {
					return err
				}
			}
			if spec.check != nil {
				if err := spec.check(fs); err != nil {
					return err
				}
			}
			cfg, err := cf.loadConfig()
			if err != nil {
				return err
			}
			// The server must be what the command means to talk to: the CA signs gateways and
			// nodes of every plane, all of whose development certificates carry 127.0.0.1.
			cfg.Server = pki.Identity{Kind: cf.server}
			ctx, cancel := context.WithTimeout(ctx, cf.timeout)
			defer cancel()
			cl := &apiClient{clientFlags: cf, cfg: cfg}
			if cl.conn, err = transport.Dial(ctx, cf.addr, cfg); err != nil {
				return err
			}
			defer cl.conn.Close()
			err = spec.body(ctx, s, fs, cl)
			if err != nil && cf.write && mayHaveCommitted(err) {
				fmt.Fprintf(s.err, "krypton: the change may or may not have been made; run the command again with -request-id %s to complete it or learn its outcome\n", cf.requestID)
			}
			return rpcError(err, cf.addr, cf.timeout)
		},
	}
}

// refuseEnv refuses the environment variables that command.go's KRYPTON_<FLAG> rule would turn
// into a hazard: a request id in the environment would make every later write a "retry" of the
// first (a second rotation silently returning the first one's result), and a data key must never
// be shown or written because of a variable set long ago.
func refuseEnv() error {
	for _, name := range []string{"KRYPTON_REQUEST_ID", "KRYPTON_SHOW_PLAINTEXT", "KRYPTON_OUT"} {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			return usagef("%s is set; it would apply to every command, so it is refused: give the flag on the command line instead", name)
		}
	}
	return nil
}

// loadConfig reads the CA and client certificate named by the flags, with errors that say which
// flag is missing or which file cannot be read, and checks that the certificate is of the kind the
// command needs.
func (c *clientFlags) loadConfig() (transport.ClientConfig, error) {
	if tok := c.token(); tok != nil && c.clientCert == "" && c.clientKey == "" {
		return c.loadTokenConfig(tok)
	}
	for _, f := range []struct{ name, value string }{
		{"ca-cert", c.caCert}, {"client-cert", c.clientCert}, {"client-key", c.clientKey},
	} {
		env := "KRYPTON_" + strings.ToUpper(strings.ReplaceAll(f.name, "-", "_"))
		if f.value == "" {
			return transport.ClientConfig{}, usagef("-%s is required (or set %s); %s", f.name, env, c.certHint())
		}
		if _, err := os.Stat(f.value); err != nil {
			return transport.ClientConfig{}, fmt.Errorf("-%s: %w", f.name, err)
		}
	}
	cfg, err := transport.LoadClientConfig(c.caCert, c.clientCert, c.clientKey)
	if err != nil {
		return transport.ClientConfig{}, err
	}
	leaf, err := x509.ParseCertificate(cfg.Certificate.Certificate[0])
	if err != nil {
		return transport.ClientConfig{}, fmt.Errorf("-client-cert %s: %w", c.clientCert, err)
	}
	id, err := pki.IdentityFromCertificate(leaf)
	if err != nil {
		return transport.ClientConfig{}, fmt.Errorf("-client-cert %s: %w", c.clientCert, err)
	}
	if id.Kind != c.kind {
		return transport.ClientConfig{}, fmt.Errorf("-client-cert %s names %s, %s certificate; %s", c.clientCert, id, id.Kind.Article(), c.certHint())
	}
	cfg.Token = c.token() // with a certificate too, a token (if any) decides who calls
	return cfg, nil
}

func (c *clientFlags) certHint() string {
	if c.kind == pki.KindService {
		return "this command needs a service certificate (krypton certs service <tenant> <service>)"
	}
	return "this command needs an operator certificate (krypton certs operator <name>)"
}

// newRequestID returns 128 random bits in hex: unique per intended change, as the API asks.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// checkRequestID applies the API's rule (transport.CheckRequestID) to -request-id.
func checkRequestID(id string) error {
	if transport.CheckRequestID(id) != nil {
		return usagef("-request-id must be printable ASCII without spaces, 1 to %d characters (or none: a random one is made)", transport.MaxRequestID)
	}
	return nil
}

// mayHaveCommitted says whether a failed write may have been applied, or be applied by a retry
// with the same request id. A call that never left for want of a connection was not.
func mayHaveCommitted(err error) bool {
	if definiteRefusal(err) {
		return false
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Aborted:
		return true
	case codes.Unavailable:
		return !notSent(err)
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// definiteRefusal recognises the Aborted answers that are not races of an unknown outcome but
// refusals of a precondition, decided on the leader before anything was written: the policy
// revision that -expected-revision names is not the current one.
func definiteRefusal(err error) bool {
	return revisionMismatch(err)
}

// revisionMismatch says whether err is governance's answer that a policy's revision is not the
// one expected (govfsm.ErrRevisionMismatch: a fixed message under codes.Aborted).
func revisionMismatch(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Aborted && st.Message() == govfsm.ErrRevisionMismatch.Error()
}

// notSent recognises grpc-go's fail-fast error for a call made while the connection could not be
// established (its message is the only sign; this is used for a hint, never for a decision).
func notSent(err error) bool {
	msg := status.Convert(err).Message()
	return strings.Contains(msg, "connection error") || strings.Contains(msg, "while dialing")
}

// rpcError turns a gRPC status into "<code>: <message>" (main adds "krypton: "); other errors pass
// through. The message is the server's own: it never carries key material.
func rpcError(err error, addr string, timeout time.Duration) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(usageError); ok {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: no answer from %s within -timeout %s", codes.DeadlineExceeded, addr, timeout)
		}
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		if notSent(err) {
			msg = fmt.Sprintf("cannot reach %s: %s", addr, msg)
		}
	case codes.DeadlineExceeded:
		msg = fmt.Sprintf("no answer from %s within -timeout %s (%s)", addr, timeout, msg)
	}
	return fmt.Errorf("%s: %s", st.Code(), msg)
}

// protoJSON is how every client command prints its response for programs: protojson with the
// field names of the .proto files (snake_case) and every field present, re-indented so that the
// output is byte-stable (protojson deliberately varies its whitespace).
var protoJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

func writeProtoJSON(w io.Writer, m proto.Message) error {
	b, err := protoJSON.Marshal(m)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

// writeIndented writes the JSON document b indented by two spaces, with a final newline.
func writeIndented(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// output prints m, a response of the API, in the command's -format (emit).
func (c *clientFlags) output(w io.Writer, m proto.Message, text func(w io.Writer) error) error {
	return emit(w, c.format, m, text, nil)
}

// outputJSON is output for a response of the command's own making: v must marshal to JSON in the
// same style (snake_case names).
func (c *clientFlags) outputJSON(w io.Writer, v any, text func(w io.Writer) error) error {
	return emit(w, c.format, v, text, nil)
}

// outputRaw is outputJSON for the commands with a -format raw: raw writes the bytes.
func (c *clientFlags) outputRaw(w io.Writer, v any, text, raw func(w io.Writer) error) error {
	return emit(w, c.format, v, text, raw)
}

// table writes rows under a header, aligned as consul's tables are.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// enumName shows an enum value for people: KEY_STATE_DECRYPT_ONLY is "decrypt-only".
func enumName(v fmt.Stringer, prefix string) string {
	s := strings.TrimPrefix(v.String(), prefix)
	if s == "UNSPECIFIED" {
		return "unknown"
	}
	return strings.ToLower(strings.ReplaceAll(s, "_", "-"))
}

// writeFileAtomic writes data to path with mode 0600: a temporary file in the same directory,
// synced, then renamed (or, without overwrite, linked, which fails if path exists) so that path
// never holds a partial file.
func writeFileAtomic(path string, overwrite bool, write func(f *os.File) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // after a rename or link, a no-op or the extra name
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	tmp = nil
	if overwrite {
		return os.Rename(name, path)
	}
	if err := os.Link(name, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; not overwriting it", path)
		}
		return err
	}
	return nil
}
