package jepsen

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
)

// needles finds any of many secrets in a byte slice in one pass: each secret's encodings (raw,
// hex, base64) are indexed by their first 8 bytes, and every offset of the haystack is looked up
// (a hand-rolled multi-pattern search; strings.Contains per secret would be quadratic).
type needles struct {
	byPrefix map[uint64][][]byte
	count    int
}

func plaintextIndex(h *history) *needles {
	n := &needles{byPrefix: map[uint64][][]byte{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.data {
		if len(d.plaintext) < 16 {
			continue
		}
		n.count++
		for _, enc := range [][]byte{d.plaintext, []byte(hex.EncodeToString(d.plaintext)), []byte(base64.StdEncoding.EncodeToString(d.plaintext)), []byte(base64.RawURLEncoding.EncodeToString(d.plaintext))} {
			k := binary.LittleEndian.Uint64(enc)
			n.byPrefix[k] = append(n.byPrefix[k], enc)
		}
	}
	return n
}

// find returns the offset of the first secret found in b.
func (n *needles) find(b []byte) (int, bool) {
	if len(n.byPrefix) == 0 {
		return 0, false
	}
	for i := 0; i+8 <= len(b); i++ {
		cands, ok := n.byPrefix[binary.LittleEndian.Uint64(b[i:])]
		if !ok {
			continue
		}
		for _, c := range cands {
			if bytes.HasPrefix(b[i:], c) {
				return i, true
			}
		}
	}
	return 0, false
}
