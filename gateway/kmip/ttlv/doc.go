// Package ttlv is KMIP's Tag-Type-Length-Value encoding: a strict decoder
// and an encoder for the tree of items that every KMIP message is.
//
// Every item is an 8-byte header (a 3-byte tag, a 1-byte type, a 4-byte
// big-endian length) followed by the value, padded with zero bytes to a
// multiple of 8. A Structure's value is the concatenation of its children.
//
// No Go KMIP module is available to this project (none is served by the
// module proxy it builds from), so the codec is written here. It is small on
// purpose: Decode is the only function that reads untrusted bytes, it is
// fuzzed (FuzzDecode, seeded from testdata/), and it is checked byte for byte
// against the TTLV examples of the OASIS KMIP use-case and test-case
// documents (testdata/vectors, each file naming its source).
//
// Decode refuses, rather than repairs: a length that does not match the
// type, padding that is not zero, a structure whose children do not fill it
// exactly, a tag outside KMIP's ranges, text that is not UTF-8, nesting
// deeper than Limits.MaxDepth, more than Limits.MaxItems items or more than
// Limits.MaxSize bytes. Errors name the offset and the rule broken, never the
// bytes found there.
//
//	msg, err := ttlv.Decode(buf, ttlv.DefaultLimits())
//	if err != nil { ... } // an Invalid Message response
//	hdr := msg.Child(ttlv.TagRequestHeader)
//
//	out := ttlv.Marshal(ttlv.Struct(ttlv.TagResponseMessage, hdr, item))
package ttlv
