// What `krypton dev` prints once the region is up: its addresses and commands to try.

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

func (d *devRegion) printWelcome(w io.Writer) {
	leader := d.leader()
	fmt.Fprintln(w, "==> Krypton development region is running. NOT FOR PRODUCTION: a throwaway CA, and by default a root key in a file on this machine.")
	fmt.Fprintln(w)
	for i, c := range d.cfgs {
		role := "follower"
		if i == leader {
			role = "leader"
		}
		fmt.Fprintf(w, "    %-7s api %-16s raft %-16s metrics http://%s/metrics  (%s)\n", c.NodeID, c.RPCAddr, c.RaftAddr, c.HTTPAddr, role)
	}
	fmt.Fprintf(w, "    governance api %s: the region's leader follows its event feed\n", d.gov.Addr())
	fmt.Fprintf(w, "    gateway for demo/app: grpc %s, KMIP %s, unix %s\n", d.gw.Addr(), d.gw.KMIPAddr(), d.gw.UnixSocket())
	fmt.Fprintf(w, "\n    data, certificates and root key: %s\n", d.dir)
	fmt.Fprintf(w, "    tenant \"demo\" on %s, with service key \"demo/app\"\n\n", d.anchorURI)
	fmt.Fprintln(w, "Talk to it as an operator:")
	if dir := pathToSelf(); dir != "" {
		fmt.Fprintf(w, "    export PATH=\"%s:$PATH\"\n", dir)
	}
	fmt.Fprintf(w, "    export KRYPTON_ADDR=%s\n", d.cfgs[0].RPCAddr)
	fmt.Fprintf(w, "    export KRYPTON_CA_CERT=%s\n", filepath.Join(d.dir, "certs", caCertFile))
	fmt.Fprintf(w, "    export KRYPTON_CLIENT_CERT=%s\n", d.operator[0])
	fmt.Fprintf(w, "    export KRYPTON_CLIENT_KEY=%s\n\n", d.operator[1])
	fmt.Fprintln(w, "    krypton members")
	fmt.Fprintln(w, "    krypton operator raft list-peers")
	fmt.Fprintln(w, "    krypton key rotate demo app")
	fmt.Fprintln(w, "    krypton key describe demo app")
	fmt.Fprintf(w, "\nGovern it (tenants, policy, revocation, the kill switch):\n    export KRYPTON_GOVERNANCE_ADDR=%s\n", d.gov.Addr())
	ownerKey := filepath.Join(d.dir, devOwnerKey)
	fmt.Fprintln(w, "    krypton tenant create -anchor "+d.anchorURI+" -regions dev -owner-pub "+ownerKey+".pub acme")
	fmt.Fprintln(w, "    krypton service create acme payments")
	fmt.Fprintln(w, "    krypton revoke -tenant acme -service payments -version 1 -reason demo -dry-run")
	fmt.Fprintln(w, "    krypton tenant delete-anchor -reason \"trying the kill switch\" -wait acme   # every node refuses acme")
	consent := filepath.Join(d.dir, "consent.jws")
	fmt.Fprintln(w, "    krypton owner consent -key "+ownerKey+" -op set-anchor -anchor "+d.anchorURI+" -out "+consent+" acme   # the tenant's owner agrees")
	fmt.Fprintln(w, "    krypton tenant set-anchor -anchor "+d.anchorURI+" -consent "+consent+" acme   # lifts it; nothing was lost")
	fmt.Fprintln(w, "    krypton governance status")
	fmt.Fprintln(w, "\nWrap and unwrap as the service demo/app (wrapping takes a service certificate):")
	// The blob datakey prints goes straight to unwrap, which gives the data key back: one pipe,
	// each side with the service certificate (a NAME=value prefix reaches one command only).
	svc := fmt.Sprintf("KRYPTON_CLIENT_CERT=%s KRYPTON_CLIENT_KEY=%s", d.service[0], d.service[1])
	fmt.Fprintf(w, "    %s \\\n      krypton datakey -key demo/app | \\\n    %s \\\n      krypton unwrap -show-plaintext -\n\n", svc, svc)
	fmt.Fprintf(w, "Applications encrypt through the gateway (Go: client.DialGatewayUnix(%q)); KMIP clients such as\n", d.gw.UnixSocket())
	fmt.Fprintf(w, "PyKMIP connect to %s with a demo/app service certificate (docs/gateway.md, docs/kmip.md).\n\n", d.gw.KMIPAddr())
	if d.anchorPath != "" {
		fmt.Fprintf(w, "Pull the plug on the root key (the L1 kill switch) and watch calls fail:  touch %s.disabled\n", d.anchorPath)
		fmt.Fprintf(w, "  (obeyed within one root-key check, a few seconds; rm %s.disabled enables it again)\n", d.anchorPath)
	} else {
		fmt.Fprintf(w, "Pull the plug: disable %s in its console, and every node refuses the tenant within one check period.\n", d.anchorURI)
	}
	fmt.Fprintln(w, "Ctrl-C stops the region and wipes every key from memory.")
}

// pathToSelf is the directory of this executable when `krypton` on PATH is not this executable (as
// after `make dev`, which runs bin/krypton): the welcome's commands then need that directory on
// PATH, or they fail with "command not found". Empty when PATH already finds this executable.
func pathToSelf() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return ""
	}
	if found, err := exec.LookPath("krypton"); err == nil {
		if found, err = filepath.Abs(found); err == nil {
			if found, err = filepath.EvalSymlinks(found); err == nil && found == self {
				return ""
			}
		}
	}
	return filepath.Dir(self)
}
