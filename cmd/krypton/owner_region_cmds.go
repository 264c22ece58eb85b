package main

import (
	"context"
	"flag"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The operator's side of tenant owner keys, for a region and for governance alike
// (docs/security.md, "Tenant owner consent"): -owner-pub registers the public key the customer
// made with `krypton owner keygen`, -consent relays a consent the customer signed with
// `krypton owner consent`.

// ownerPubFlag declares -owner-pub, the owner public key file of tenant create.
func ownerPubFlag(fs *flag.FlagSet, path *string) {
	fs.StringVar(path, "owner-pub", "", "the tenant owner's public key file ('krypton owner keygen'); without one the tenant's anchor "+
		"cannot be moved (governance) nor the tenant rekeyed (a region) until one is registered with `tenant set-owner`")
}

// regionOwnerKeyText is the owner key row of a region's tenant.
func regionOwnerKeyText(fp string) string {
	if fp == "" {
		return "none in this region (a region that follows governance keeps none: governance holds it, see `krypton tenant describe -governance ADDR`; otherwise the tenant cannot be rekeyed until `tenant set-owner` registers one)"
	}
	return fp
}

// rekeyConsentFlag reads tenant rekey's required -consent (see consentFlag).
func rekeyConsentFlag(fs *flag.FlagSet, path string) (string, error) {
	if path == "" {
		return "", usagef("%s: -consent is required: the tenant's owner makes one with `krypton owner consent -key <owner.key> -op rekey -anchor <uri> -region <region> -out consent.jws %s`",
			cmdName(fs), fs.Arg(0))
	}
	return consentFlag(fs, path)
}

// setOwnerSpec is `tenant set-owner` for a region or governance (where): call sends the request
// and returns the answer with its text form.
func setOwnerSpec(where string, call func(ctx context.Context, c *apiClient, req *kv1.SetOwnerKeyRequest) (proto.Message, func(io.Writer) error, error)) clientSpec {
	var ownerPub, ownerPEM, consentPath, consent string
	what, at := "moving the anchor", "at governance"
	consentHow := "`krypton owner consent -op set-owner -owner-pub <new.pub>`"
	if where == "region" {
		what, at = "rekeying the tenant", "at the region"
		consentHow = "`krypton owner consent -op set-owner -owner-pub <new.pub> -region <region>`"
	}
	return clientSpec{
		name: "set-owner", synopsis: "register or replace a tenant's owner key (" + where + ")", usage: "-owner-pub <file> [-consent <file>] <tenant>",
		help: "Registers <tenant>'s owner public key " + at + ", whose consent " + what + " needs. The first key of a " +
			"tenant without one is registered on the operator's word (and audited); replacing a key needs a consent by the " +
			"current one: " + consentHow + ".",
		kind:  pki.KindOperator,
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&ownerPub, "owner-pub", "", "the owner public key file ('krypton owner keygen'; required)")
			fs.StringVar(&consentPath, "consent", "", "the current owner's consent, when replacing a key")
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 1, "-owner-pub <file> [-consent <file>] <tenant>"); err != nil {
				return err
			}
			if ownerPub == "" {
				return usagef("%s: -owner-pub is required", cmdName(fs))
			}
			var err error
			if ownerPEM, err = readOwnerPub(ownerPub); err != nil {
				return err
			}
			consent, err = consentFlag(fs, consentPath)
			return err
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			out, text, err := call(ctx, c, &kv1.SetOwnerKeyRequest{RequestId: c.requestID, Tenant: fs.Arg(0), OwnerPublicKey: ownerPEM, Consent: consent})
			if err != nil {
				return err
			}
			return c.output(s.out, out, text)
		},
	}
}

// tenantSetOwnerCommand is a region's `tenant set-owner`.
func tenantSetOwnerCommand() *command {
	return clientCommand(setOwnerSpec("region", func(ctx context.Context, c *apiClient, req *kv1.SetOwnerKeyRequest) (proto.Message, func(io.Writer) error, error) {
		t, err := c.admin().SetOwnerKey(ctx, req)
		return t, func(w io.Writer) error { return tenantText(w, t) }, err
	}))
}

// govSetOwnerCommand is governance's `tenant set-owner`.
func govSetOwnerCommand() *command {
	return govCommand(setOwnerSpec("governance", func(ctx context.Context, c *apiClient, req *kv1.SetOwnerKeyRequest) (proto.Message, func(io.Writer) error, error) {
		t, err := c.gov().SetOwnerKey(ctx, req)
		return t, func(w io.Writer) error { return govTenantText(w, t) }, err
	}))
}
