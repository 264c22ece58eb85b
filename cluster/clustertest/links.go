package clustertest

import "sync"

// Links is a set of cut node-to-node links, by node id: a filter for cluster.WithConnFilter (and
// for any other node-to-node traffic a harness routes through it). The zero value has every link up.
type Links struct {
	mu  sync.Mutex // guards cut
	cut map[[2]string]bool
}

// Cut cuts the link from each node of a to each node of b, in that direction only.
func (l *Links) Cut(a, b []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut == nil {
		l.cut = make(map[[2]string]bool)
	}
	for _, x := range a {
		for _, y := range b {
			l.cut[[2]string{x, y}] = true
		}
	}
}

// Heal restores every link.
func (l *Links) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.cut)
}

// Allowed reports whether local may talk to remote; it has cluster.ConnFilter's signature.
func (l *Links) Allowed(local, remote string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.cut[[2]string{local, remote}]
}
