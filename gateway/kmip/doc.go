// Package kmip is the gateway's KMIP front end: a KMIP 1.2-1.4 and 2.0
// server over mutually authenticated TLS (port 5696) for applications and
// databases that already speak KMIP.
//
// It manages AES-256 symmetric keys: Create, Get, Locate, Activate, Revoke,
// Destroy, Get Attributes, Get Attribute List, Encrypt and Decrypt
// (AES-GCM, and AES-CBC for clients that know nothing else), Query and
// Discover Versions. Each key is a Krypton data key (L4) made and wrapped by
// the region under the client's service key (L3), through the Keys
// interface that the gateway core implements. The server keeps only the
// wrapped blob, with the object's attributes and state, in a registry (a
// bbolt file, or memory); it unwraps per operation and wipes the plaintext
// once the response is written.
//
// Every client presents a certificate naming a Krypton service
// (spiffe://krypton/tenant/<t>/service/<s>), and every object belongs to
// the identity that created it: another identity, of the same tenant or
// another, gets Item Not Found for it.
//
//	srv, err := kmip.New(kmip.Config{
//		ClientCAs:    roots,
//		Certificate:  cert,
//		RegistryPath: "/var/lib/krypton/kmip.db",
//	}, keys)
//	...
//	go srv.ListenAndServe(":5696")
//	defer srv.Close()
//
// Package ttlv holds the wire encoding; docs/kmip.md says what clients can
// rely on.
package kmip
