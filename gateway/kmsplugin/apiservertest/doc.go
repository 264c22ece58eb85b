// Package apiservertest holds the test of package kmsplugin against the kube-apiserver's own KMS v2
// code (k8s.io/apiserver: the EncryptionConfiguration loader, the envelope transformer and its gRPC
// client), over a real Unix socket, backed by a real region (region/regiontest) and gateway. It is
// a package of its own so that nothing else links k8s.io/apiserver: the package has no code.
package apiservertest
