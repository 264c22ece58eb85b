package file

import (
	"context"
	"crypto/fips140"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/internal/fipsmode"
)

func init() { anchor.Register(anchor.SchemeFile, open) }

// Marker files next to the key file, for exercising the kill switch in
// development and tests. Their content does not matter, only whether they
// exist; they are checked on every call.
const (
	// DisabledSuffix: while "<key file>.disabled" exists, every call is
	// denied with anchor.ErrDisabled, as a disabled cloud key. Removing it
	// enables the key again.
	DisabledSuffix = ".disabled"

	// UnavailableSuffix: while "<key file>.unavailable" exists, every call
	// fails with a *anchor.TransientError, as an unreachable KMS.
	UnavailableSuffix = ".unavailable"

	// StalledSuffix: while "<key file>.stalled" exists, every call waits,
	// as a KMS that accepts the connection and never answers: until the
	// marker is removed (the call then goes on), or the call's context
	// ends (a *anchor.TransientError).
	StalledSuffix = ".stalled"
)

// stallPoll is how often a stalled call looks for its marker again. The
// markers are plain files checked on every call; polling keeps it that
// way for a development anchor (a file-watching library for one test
// hook would be more than it is worth).
const stallPoll = 10 * time.Millisecond

// Sentinel errors.
var (
	// ErrInsecureFile is returned when the key file is readable or writable
	// by group or others, or its directory is writable by them. It is
	// wrapped in a *anchor.DeniedError with ReasonKeyUnusable.
	ErrInsecureFile = errors.New("file: key file or its directory is group/world accessible")

	// ErrMalformedFile is returned when the key file is not in the format
	// of this package (wrong magic, version, length or checksum).
	ErrMalformedFile = errors.New("file: key file is malformed")
)

// DevWarning is logged at WARN on open and on every call.
const DevWarning = "the file:// anchor is for development only: its root key is a plain file on this machine, not in a KMS or HSM"

// Provider is the file:// development anchor. It re-reads the key file on
// every call, so removing the file or adding a marker takes effect at
// once; the key bytes live only for the duration of a call.
type Provider struct {
	path   string
	keyID  [keyIDSize]byte // the key this Provider was opened on
	desc   anchor.Description
	log    *slog.Logger
	closed atomic.Bool
}

var _ anchor.Provider = (*Provider)(nil)

func open(ctx context.Context, u anchor.URI, opts anchor.Options) (anchor.Provider, error) {
	fu, ok := u.(*anchor.FileURI)
	if !ok {
		return nil, fmt.Errorf("file: not a file URI: %s", u.Scheme())
	}
	return Open(ctx, fu, opts)
}

// Open opens the key file u names, creating it first if opts.Create is set
// and it does not exist. It logs a WARN that this anchor is for development
// only.
//
// Unless opts.Development or opts.Create is set, Open refuses with
// anchor.ErrDevelopment before it looks at, reads or makes any file. Only
// opts.Create (set by `krypton dev` and tests) makes a key file; the URI's
// own create=1 is accepted for compatibility and makes nothing: a URI
// arrives in an operator's request, and a node must not make directories
// and files because a request asked it to.
//
// Errors: anchor.ErrDevelopment; a *anchor.DeniedError with ReasonDestroyed if the file does not
// exist (and is not to be created), ReasonKeyUnusable wrapping
// ErrInsecureFile or ErrMalformedFile; other I/O errors as they come.
func Open(ctx context.Context, u *anchor.FileURI, opts anchor.Options) (*Provider, error) {
	if !opts.Development && !opts.Create {
		return nil, fmt.Errorf("%w: file: this process was not started for development", anchor.ErrDevelopment)
	}
	p := &Provider{
		path: u.Path,
		desc: anchor.Description{Scheme: anchor.SchemeFile, Key: u.Path, URI: u.String(), Development: true},
	}
	if opts.Create {
		if err := create(u.Path); err != nil {
			return nil, err
		}
	}
	k, err := p.read("open")
	if err != nil {
		return nil, err
	}
	p.keyID = k.id
	k.wipe()
	p.log = opts.Log().With("anchor", anchor.SchemeFile, "path", u.Path, "key-id", hex.EncodeToString(p.keyID[:]))
	p.log.Warn(DevWarning, "op", "open")
	return p, nil
}

// create makes a new key file at path unless one exists. The directory is
// made 0700, the file 0600. The file is written to a temporary name and
// linked into place, so that a crash never leaves a half-written key and
// an existing key is never overwritten.
func create(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("file: create key directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file: %w", err)
	}
	var k rootKey
	if _, err := io.ReadFull(rand.Reader, k.id[:]); err != nil {
		return fmt.Errorf("file: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, k.key[:]); err != nil {
		return fmt.Errorf("file: %w", err)
	}
	buf := k.marshal()
	defer clear(buf)
	k.wipe()

	tmp, err := os.CreateTemp(dir, ".root-key-*")
	if err != nil {
		return fmt.Errorf("file: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600 already; Chmod states the intent.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("file: %w", err)
	}
	if _, err := tmp.Write(buf); err != nil {
		tmp.Close()
		return fmt.Errorf("file: write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// read loads the key file and checks the markers, mapping what it finds
// to the anchor error contract.
func (p *Provider) read(op string) (*rootKey, error) {
	if _, err := os.Lstat(p.path + UnavailableSuffix); err == nil {
		return nil, anchor.Transient(op, anchor.SchemeFile, errors.New("file: unavailable marker present"))
	}
	f, err := os.Open(p.path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, anchor.Deny(op, anchor.SchemeFile, anchor.ReasonDestroyed, errors.New("file: key file does not exist"))
		case errors.Is(err, fs.ErrPermission):
			return nil, anchor.Deny(op, anchor.SchemeFile, anchor.ReasonAccessDenied, err)
		}
		return nil, anchor.Transient(op, anchor.SchemeFile, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, anchor.Transient(op, anchor.SchemeFile, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 {
		return nil, anchor.Deny(op, anchor.SchemeFile, anchor.ReasonKeyUnusable, ErrInsecureFile)
	}
	if dst, err := os.Stat(filepath.Dir(p.path)); err == nil && dst.Mode().Perm()&0o022 != 0 {
		return nil, anchor.Deny(op, anchor.SchemeFile, anchor.ReasonKeyUnusable, ErrInsecureFile)
	}
	buf := make([]byte, keyFileSize+1)
	defer clear(buf)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, anchor.Transient(op, anchor.SchemeFile, err)
	}
	k, err := parseKey(buf[:n])
	if err != nil {
		return nil, anchor.Deny(op, anchor.SchemeFile, anchor.ReasonKeyUnusable, err)
	}
	if p.keyID != ([keyIDSize]byte{}) && subtle.ConstantTimeCompare(k.id[:], p.keyID[:]) != 1 {
		k.wipe()
		return nil, anchor.Deny(op, anchor.SchemeFile, anchor.ReasonDestroyed,
			errors.New("file: key file now holds another key; the key this anchor was opened on is gone"))
	}
	if _, err := os.Lstat(p.path + DisabledSuffix); err == nil {
		k.wipe()
		return nil, anchor.Deny(op, anchor.SchemeFile, anchor.ReasonDisabled, errors.New("file: disabled marker present"))
	}
	return k, nil
}

// begin is the common start of every call: closed check, WARN, context,
// key. A done context is transient, as a cloud provider's timeout is: the
// caller gave up, the key said nothing.
func (p *Provider) begin(ctx context.Context, op string) (*rootKey, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	p.log.Warn(DevWarning, "op", op)
	if err := ctx.Err(); err != nil {
		return nil, anchor.Transient(op, anchor.SchemeFile, err)
	}
	if err := p.waitStalled(ctx); err != nil {
		return nil, anchor.Transient(op, anchor.SchemeFile, err)
	}
	return p.read(op)
}

// waitStalled returns when the stalled marker is absent, or with ctx's
// error when ctx ends first.
func (p *Provider) waitStalled(ctx context.Context) error {
	if _, err := os.Lstat(p.path + StalledSuffix); err != nil {
		return nil
	}
	t := time.NewTicker(stallPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("file: stalled marker present: %w", ctx.Err())
		case <-t.C:
		}
		if _, err := os.Lstat(p.path + StalledSuffix); err != nil {
			return nil
		}
	}
}

// Seal implements anchor.Provider.
func (p *Provider) Seal(ctx context.Context, plaintext []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckSeal(plaintext, ac); err != nil {
		return nil, err
	}
	k, err := p.begin(ctx, "seal")
	if err != nil {
		return nil, err
	}
	defer k.wipe()
	fips := fips140.Enabled()
	out := make([]byte, headerSize, headerSize+nonceSize+len(plaintext)+tagSize)
	copy(out, blobMagic)
	if fips {
		copy(out, blobMagic2)
	}
	copy(out[len(blobMagic):], k.id[:])
	salt := out[len(blobMagic)+keyIDSize : headerSize]
	if _, err := io.ReadFull(rand.Reader, salt); err != nil {
		return nil, anchor.Transient("seal", anchor.SchemeFile, err)
	}
	aead, err := k.aead(salt, fips)
	if err != nil {
		return nil, fmt.Errorf("file: seal (FIPS 140-3 mode %s): %w", fipsmode.Mode(), err)
	}
	if fips { // the module draws the nonce and appends it, then ciphertext and tag
		return aead.Seal(out, nil, plaintext, aad(out[:headerSize], ac)), nil
	}
	return aead.Seal(out, zeroNonce[:], plaintext, aad(out[:headerSize], ac)), nil
}

// Unseal implements anchor.Provider.
func (p *Provider) Unseal(ctx context.Context, sealed []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckUnseal(anchor.SchemeFile, sealed, ac); err != nil {
		return nil, err
	}
	k, err := p.begin(ctx, "unseal")
	if err != nil {
		return nil, err
	}
	defer k.wipe()
	invalid := func(why string) error {
		return anchor.Deny("unseal", anchor.SchemeFile, anchor.ReasonInvalidCiphertext, errors.New("file: "+why))
	}
	if len(sealed) < headerSize+tagSize+1 {
		return nil, invalid("not a file anchor blob")
	}
	var nonce, body []byte
	switch string(sealed[:len(blobMagic)]) {
	case blobMagic:
		nonce, body = zeroNonce[:], sealed[headerSize:]
	case blobMagic2:
		if len(sealed) < headerSize+nonceSize+tagSize+1 {
			return nil, invalid("not a file anchor blob")
		}
		nonce, body = sealed[headerSize:headerSize+nonceSize], sealed[headerSize+nonceSize:]
	default:
		return nil, invalid("not a file anchor blob")
	}
	if subtle.ConstantTimeCompare(sealed[len(blobMagic):len(blobMagic)+keyIDSize], k.id[:]) != 1 {
		return nil, invalid("sealed under another key")
	}
	dk, err := k.oneTimeKey(sealed[len(blobMagic)+keyIDSize : headerSize])
	if err != nil {
		return nil, err
	}
	defer clear(dk)
	pt, err := fipsmode.OpenGCM(dk, nonce, body, aad(sealed[:headerSize], ac))
	if err != nil {
		return nil, invalid("message authentication failed (tampered, or another context)")
	}
	return pt, nil
}

// Check implements anchor.Provider: the key file exists, is private,
// holds the key this Provider was opened on, and no marker is set.
func (p *Provider) Check(ctx context.Context) error {
	k, err := p.begin(ctx, "check")
	if err != nil {
		return err
	}
	k.wipe()
	return nil
}

// Describe implements anchor.Provider.
func (p *Provider) Describe() anchor.Description { return p.desc }

// Close implements anchor.Provider. The Provider holds no resources
// between calls, so Close only marks it closed.
func (p *Provider) Close() error {
	p.closed.Store(true)
	return nil
}

// Disable creates the ".disabled" marker next to the key file at path:
// providers on it deny every call with anchor.ErrDisabled until Enable.
func Disable(path string) error {
	return touch(path + DisabledSuffix)
}

// Enable removes the ".disabled" marker.
func Enable(path string) error {
	return rmMarker(path + DisabledSuffix)
}

// SetUnavailable creates (on) or removes (off) the ".unavailable" marker:
// while it exists, providers on path fail every call transiently.
func SetUnavailable(path string, on bool) error {
	if on {
		return touch(path + UnavailableSuffix)
	}
	return rmMarker(path + UnavailableSuffix)
}

// SetStalled creates (on) or removes (off) the ".stalled" marker: while it
// exists, every call of providers on path waits for its removal or its
// context's end.
func SetStalled(path string, on bool) error {
	if on {
		return touch(path + StalledSuffix)
	}
	return rmMarker(path + StalledSuffix)
}

// Destroy removes the key file at path: everything sealed under it is
// lost for good, which is the point.
func Destroy(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("file: destroy: %w", err)
	}
	return nil
}

func touch(name string) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("file: %w", err)
	}
	return f.Close()
}

func rmMarker(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file: %w", err)
	}
	return nil
}
