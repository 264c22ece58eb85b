// Package file is the file:// development anchor: an L1 root key kept in
// a local file, for `krypton dev`, tests and laptops. It is not a KMS:
// whoever can read the file has the root key. It says so with a WARN on
// open and on every call, and its Description has Development set, so
// servers can refuse it outside development mode.
//
//	import _ "github.com/kryptonkms/krypton/anchor/file"
//
//	p, err := anchor.Open(ctx, "file:///home/me/.krypton/root.key", anchor.Options{Create: true})
//
// Open refuses with anchor.ErrDevelopment, before it touches any file,
// unless the caller allows development anchors (anchor.Options.Development,
// which a server sets only with -dev-anchor) or asks to create the key
// (anchor.Options.Create, set only by `krypton dev` and tests). The key
// file (256-bit key, 0600, in a 0700 directory) is made only on
// Options.Create, never because a URI says create=1, and is refused if
// group or others can read it. Markers next to it
// drive the kill switch in development: "<file>.disabled" denies every
// call as ErrDisabled, "<file>.unavailable" makes every call fail
// transiently, and removing the file (Destroy) denies every call as
// ErrDestroyed. Disable, Enable, SetUnavailable and Destroy manage them.
//
// Seal derives a one-time AES-256-GCM key per call from the root key and
// a random salt (HKDF-SHA256), with the anchor.Context as additional
// data; format.go specifies the bytes.
package file
