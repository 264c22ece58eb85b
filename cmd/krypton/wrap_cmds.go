package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// The wrap commands use a tenant's keys with a service certificate. Their IO rules:
//
//   - blobs are printed and read as standard, padded base64 (-format raw prints the bytes);
//   - stdout holds only what a script captures: wrap and datakey print the blob on one line (datakey
//     with -show-plaintext the data key on a second), unwrap -show-plaintext exactly the data key
//     as base64 and a newline, so that `krypton unwrap -show-plaintext BLOB | base64 -d` gives the
//     key's bytes; notes for people (where -out wrote the key) go to stderr;
//   - a data key (L4 plaintext) is read from -plaintext-file or stdin, raw (exactly 32 bytes) or as
//     base64 or hex text (-in-format);
//   - a data key is written only where asked: to -out, a new file of mode 0600 (raw bytes, never
//     overwriting), or to stdout as base64 with -show-plaintext. Nothing else ever prints one.
//
// With -format json they print wrapResult (snake_case, as the protojson of the other commands);
// plaintext appears there only with -show-plaintext.

// maxPlaintextInput bounds what is read as a data key: generous for base64 or hex text of any
// plaintext the API accepts, small enough that a wrong file is refused rather than slurped.
const maxPlaintextInput = 4096

type keyRefJSON struct {
	Tenant  string `json:"tenant"`
	Service string `json:"service"`
	Version uint32 `json:"version"`
}

type wrapResult struct {
	Blob          string      `json:"blob,omitempty"`
	Key           *keyRefJSON `json:"key"`
	Plaintext     string      `json:"plaintext,omitempty"`      // only with -show-plaintext
	PlaintextFile string      `json:"plaintext_file,omitempty"` // with -out
}

func keyRef(k *kv1.KeyRef) *keyRefJSON {
	return &keyRefJSON{Tenant: k.GetTenant(), Service: k.GetService(), Version: k.GetVersion()}
}

func (k *keyRefJSON) String() string {
	return fmt.Sprintf("%s/%s version %d", k.Tenant, k.Service, k.Version)
}

// parseKeyFlag parses -key tenant/service.
func parseKeyFlag(s string) (*kv1.KeyRef, error) {
	if s == "" {
		return nil, usagef("-key tenant/service is required (or set KRYPTON_KEY)")
	}
	tenant, service, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(service, "/") {
		return nil, usagef("-key must be tenant/service")
	}
	if wrap.ValidateName(tenant) != nil || wrap.ValidateName(service) != nil {
		return nil, usagef("-key: tenant and service names are 1 to 64 characters of [a-z0-9._-], starting with [a-z0-9]")
	}
	return &kv1.KeyRef{Tenant: tenant, Service: service}, nil
}

// plaintextOut is the -out and -show-plaintext pair of the commands that receive a data key.
type plaintextOut struct {
	out  string
	show bool
}

func (p *plaintextOut) register(fs *flag.FlagSet) {
	fs.StringVar(&p.out, "out", "", "write the data key, raw, to this new file (mode 0600; never overwrites)")
	fs.BoolVar(&p.show, "show-plaintext", false, "print the data key as base64 on stdout")
}

func (p *plaintextOut) check() error {
	if p.out != "" {
		if _, err := os.Lstat(p.out); err == nil {
			return fmt.Errorf("-out %s already exists; not overwriting a data key", p.out)
		}
	}
	return nil
}

// deliver writes the data key where asked, fills res, and wipes plaintext.
func (p *plaintextOut) deliver(plaintext []byte, res *wrapResult) error {
	defer clear(plaintext)
	if p.out != "" {
		if err := writeFileAtomic(p.out, false, func(f *os.File) error { _, err := f.Write(plaintext); return err }); err != nil {
			return err
		}
		res.PlaintextFile = p.out
	}
	if p.show {
		res.Plaintext = base64.StdEncoding.EncodeToString(plaintext)
	}
	return nil
}

func (p *plaintextOut) text(res *wrapResult) string {
	var parts []string
	if res.Plaintext != "" {
		parts = append(parts, res.Plaintext)
	}
	if res.PlaintextFile != "" {
		parts = append(parts, "written to "+res.PlaintextFile+" (mode 0600)")
	}
	if len(parts) == 0 {
		return "not shown (use -out <file> or -show-plaintext)"
	}
	return strings.Join(parts, "; ")
}

// note tells people on stderr where -out wrote the data key, so that stdout holds only what a
// script captures.
func (p *plaintextOut) note(w io.Writer, res *wrapResult) {
	if res.PlaintextFile != "" {
		fmt.Fprintf(w, "krypton: data key written to %s (mode 0600)\n", res.PlaintextFile)
	}
}

// writeRaw writes the data key's bytes (-format raw -show-plaintext).
func (p *plaintextOut) writeRaw(w io.Writer, res *wrapResult) error {
	key, err := base64.StdEncoding.DecodeString(res.Plaintext)
	defer clear(key)
	if err != nil {
		return err
	}
	_, err = w.Write(key)
	return err
}

// format is the -format a command was given.
func format(fs *flag.FlagSet) string {
	if f := fs.Lookup("format"); f != nil {
		return f.Value.String()
	}
	return formatText
}

// readPlaintext reads a data key from path ("" or "-" for stdin) in the given format.
func readPlaintext(path, format string) ([]byte, error) {
	var r io.Reader
	name := path
	if path == "" || path == "-" {
		name = "stdin"
		if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return nil, usagef("no plaintext: give -plaintext-file or pipe the data key to stdin")
		}
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("-plaintext-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	buf := make([]byte, maxPlaintextInput+1)
	n, err := io.ReadFull(r, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, fmt.Errorf("reading the plaintext from %s: %w", name, err)
	}
	in := buf[:n]
	defer clear(buf)
	if n > maxPlaintextInput {
		return nil, fmt.Errorf("the plaintext in %s is longer than %d bytes: not a data key", name, maxPlaintextInput)
	}
	var key []byte
	switch format {
	case "raw":
		key = append([]byte(nil), in...)
	case "base64":
		text := bytes.TrimSpace(in)
		key = make([]byte, base64.StdEncoding.DecodedLen(len(text)))
		m, err := base64.StdEncoding.Decode(key, text)
		if err != nil {
			clear(key)
			return nil, fmt.Errorf("the plaintext in %s is not valid base64", name)
		}
		key = key[:m]
	case "hex":
		text := bytes.TrimSpace(in)
		key = make([]byte, hex.DecodedLen(len(text)))
		if _, err := hex.Decode(key, text); err != nil {
			clear(key)
			return nil, fmt.Errorf("the plaintext in %s is not valid hex", name)
		}
	}
	if len(key) != wrap.KeySize {
		hint := ""
		if format == "raw" {
			hint = " (for text, use -in-format base64 or hex)"
		}
		n := len(key)
		clear(key)
		return nil, fmt.Errorf("the plaintext in %s is %d bytes; a data key is %d%s", name, n, wrap.KeySize, hint)
	}
	return key, nil
}

// decodeBlob reads a blob argument: base64 text, or "-" for base64 on stdin.
func decodeBlob(arg string) ([]byte, error) {
	text := arg
	if arg == "-" {
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 8192))
		if err != nil {
			return nil, fmt.Errorf("reading the blob from stdin: %w", err)
		}
		text = string(b)
	}
	text = strings.TrimSpace(text)
	blob, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		// Tolerate missing padding, as some tools strip it.
		if blob, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(text, "=")); err != nil {
			return nil, usagef("the blob is not valid base64")
		}
	}
	if len(blob) == 0 {
		return nil, usagef("the blob is empty")
	}
	return blob, nil
}

func wrapCommand() *command {
	var key, wctx, file, inFormat string
	var ref *kv1.KeyRef
	return clientCommand(clientSpec{
		name: "wrap", synopsis: "wrap a data key under a service key", usage: "-key <tenant>/<service> [-context <text>] [-plaintext-file <file>]",
		help: "Wraps a 32-byte data key under the current version of the service key -key, binding -context as additional data " +
			"(the same context must be given to unwrap). The data key is read from -plaintext-file or stdin: raw bytes, or base64 or hex text with -in-format. " +
			"Prints the blob as base64 on one line (-format raw: its bytes; -format json: the blob and the key version).",
		kind: pki.KindService,
		raw:  true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&key, "key", "", "the service key, tenant/service (required)")
			fs.StringVar(&wctx, "context", "", "context bound to the blob (additional authenticated data)")
			fs.StringVar(&file, "plaintext-file", "", "file holding the data key (default: stdin)")
			fs.StringVar(&inFormat, "in-format", "raw", "encoding of the data key read: raw, base64 or hex")
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 0, 0, "no arguments (the data key comes from -plaintext-file or stdin)"); err != nil {
				return err
			}
			var err error
			if ref, err = parseKeyFlag(key); err != nil {
				return err
			}
			return checkWrapFlags(wctx, inFormat)
		},
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			plaintext, err := readPlaintext(file, inFormat)
			if err != nil {
				return err
			}
			req := &kv1.WrapRequest{RequestId: newRequestID(), Key: ref, Plaintext: plaintext, Context: []byte(wctx)}
			resp, err := kv1.NewWrapServiceClient(c.conn).Wrap(ctx, req)
			clear(plaintext)
			if err != nil {
				return err
			}
			res := &wrapResult{Blob: base64.StdEncoding.EncodeToString(resp.GetBlob()), Key: keyRef(resp.GetKey())}
			return c.outputRaw(s.out, res, func(w io.Writer) error { return line(w, res.Blob) },
				func(w io.Writer) error { _, err := w.Write(resp.GetBlob()); return err })
		},
	})
}

func checkWrapFlags(wctx, inFormat string) error {
	if len(wctx) > wrap.MaxContextSize {
		return usagef("-context is longer than %d bytes", wrap.MaxContextSize)
	}
	switch inFormat {
	case "raw", "base64", "hex":
		return nil
	}
	return usagef("unknown -in-format %q (want raw, base64 or hex)", inFormat)
}

func unwrapCommand() *command {
	var wctx string
	var po plaintextOut
	return clientCommand(clientSpec{
		name: "unwrap", synopsis: "unwrap a blob to its data key", usage: "[-context <text>] [-out <file> | -show-plaintext] <blob>|-",
		help: "Unwraps <blob> (base64; - reads it from stdin) with -context, the context given when it was wrapped. " +
			"The data key is written to -out (raw, a new file of mode 0600) or printed with -show-plaintext: exactly its base64 and a newline, " +
			"so that `krypton unwrap -show-plaintext <blob> | base64 -d` gives its bytes, or the bytes themselves with -format raw. " +
			"Without either, the command only checks that the blob opens and names its key.",
		kind: pki.KindService,
		raw:  true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&wctx, "context", "", "the context the blob was wrapped with")
			po.register(fs)
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 1, "<blob> (base64, or - for stdin)"); err != nil {
				return err
			}
			if err := checkWrapFlags(wctx, "raw"); err != nil {
				return err
			}
			if format(fs) == formatRaw && !po.show {
				return usagef("-format raw prints the data key: add -show-plaintext (or write it to a file with -out)")
			}
			return po.check()
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			blob, err := decodeBlob(fs.Arg(0))
			if err != nil {
				return err
			}
			resp, err := kv1.NewWrapServiceClient(c.conn).Unwrap(ctx, &kv1.UnwrapRequest{RequestId: newRequestID(), Blob: blob, Context: []byte(wctx)})
			if err != nil {
				return err
			}
			res := &wrapResult{Key: keyRef(resp.GetKey())}
			if err := po.deliver(resp.Plaintext, res); err != nil {
				return err
			}
			return c.outputRaw(s.out, res, func(w io.Writer) error {
				if po.show {
					po.note(s.err, res)
					return line(w, res.Plaintext)
				}
				return tableNoHeader(w, [][]string{{"Key:", res.Key.String()}, {"Data key:", po.text(res)}})
			}, func(w io.Writer) error {
				po.note(s.err, res)
				return po.writeRaw(w, res)
			})
		},
	})
}

func datakeyCommand() *command {
	var key, wctx string
	var ref *kv1.KeyRef
	var po plaintextOut
	return clientCommand(clientSpec{
		name: "datakey", synopsis: "generate a data key and its blob", usage: "-key <tenant>/<service> [-context <text>] [-out <file> | -show-plaintext]",
		help: "Has the node generate a fresh 32-byte data key and wrap it under -key with -context. Prints the blob as base64 on one line " +
			"(-format raw: its bytes; -format json: the blob, the key version and, with -show-plaintext, the data key). " +
			"The data key itself is written to -out (raw, a new file of mode 0600) or, with -show-plaintext, printed as base64 on a second line; " +
			"without either it is discarded, and unwrapping the blob later recovers it.",
		kind: pki.KindService,
		raw:  true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&key, "key", "", "the service key, tenant/service (required)")
			fs.StringVar(&wctx, "context", "", "context bound to the blob (additional authenticated data)")
			po.register(fs)
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 0, 0, "no arguments"); err != nil {
				return err
			}
			var err error
			if ref, err = parseKeyFlag(key); err != nil {
				return err
			}
			if err := checkWrapFlags(wctx, "raw"); err != nil {
				return err
			}
			if format(fs) == formatRaw && po.show {
				return usagef("-format raw prints the blob's bytes only: for the data key too, use -format json or text, or -out <file>")
			}
			return po.check()
		},
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			resp, err := kv1.NewWrapServiceClient(c.conn).GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{RequestId: newRequestID(), Key: ref, Context: []byte(wctx)})
			if err != nil {
				return err
			}
			res := &wrapResult{Blob: base64.StdEncoding.EncodeToString(resp.GetBlob()), Key: keyRef(resp.GetKey())}
			if err := po.deliver(resp.Plaintext, res); err != nil {
				return err
			}
			po.note(s.err, res)
			return c.outputRaw(s.out, res, func(w io.Writer) error {
				if err := line(w, res.Blob); err != nil || !po.show {
					return err
				}
				return line(w, res.Plaintext)
			}, func(w io.Writer) error { _, err := w.Write(resp.GetBlob()); return err })
		},
	})
}
