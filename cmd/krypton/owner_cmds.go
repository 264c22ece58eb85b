package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kryptonkms/krypton/internal/owner"
)

// `krypton owner` is the tenant owner's side (docs/security.md, "Tenant owner consent"): the
// customer makes an owner key, registers its public half with the operator, and signs a consent
// for each change of the tenant's root of trust, which the operator relays with -consent. These
// commands dial nothing; they run where the owner keeps the private key.

func ownerCommand() *command {
	return &command{
		name: "owner", synopsis: "the tenant owner's key and consents (run by the customer, not the operator)",
		help: "A tenant's owner key is the customer's: moving the tenant's anchor, lifting a deleted anchor, rekeying the tenant " +
			"in a region, replacing the owner key, and adding a region to a shared tenant or making a tenant shared need a consent " +
			"signed by it, which the operator relays with -consent.",
		sub: []*command{ownerKeygenCommand(), ownerConsentCommand()},
	}
}

func ownerKeygenCommand() *command {
	var out string
	return &command{
		name: "keygen", synopsis: "make an owner key pair", usage: "-out <owner.key>",
		help: "Writes an Ed25519 owner private key to <owner.key> (mode 0600, never overwritten) and its public key to " +
			"<owner.key>.pub, and prints the public key's fingerprint. Give the .pub file to the operator " +
			"(`tenant create -owner-pub`); keep the private key yourself.",
		flags: func(fs *flag.FlagSet) { fs.StringVar(&out, "out", "", "where to write the private key (required)") },
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			if err := nargs(fs, 0, 0, "-out <owner.key>"); err != nil {
				return err
			}
			if out == "" {
				return usagef("%s: -out is required", cmdName(fs))
			}
			priv, pub, err := owner.GenerateKey()
			if err != nil {
				return err
			}
			if err := writeNew(out, priv, 0o600); err != nil {
				return err
			}
			if err := writeNew(out+".pub", pub, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(s.out, "Owner key: %s (private, keep it)\nPublic key: %s.pub\nFingerprint: %s\n", out, out, owner.Fingerprint(string(pub)))
			return nil
		},
	}
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; choose another -out or remove it first", path)
		}
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func ownerConsentCommand() *command {
	var key, op, anchorURI, region, regions, home, ownerPub, requestID, out string
	var ttl time.Duration
	return &command{
		name: "consent", synopsis: "sign the owner's consent to a change of a tenant's root of trust",
		usage: "-key <owner.key> -op set-anchor|rekey|set-owner|set-regions [-anchor <uri>] [-region <r>] [-regions <r1,r2>] [-home <r>] [-owner-pub <file>] [-request-id <id>] [-ttl 1h] -out <consent.jws> <tenant>",
		help: "Signs, with the owner key, a consent to exactly one change of <tenant>: -op set-anchor -anchor <uri> (move the " +
			"anchor at governance, or lift a deleted one), -op set-owner -owner-pub <new.pub> (hand over to a new owner key at " +
			"governance; with -region <r>, at region r), -op rekey -anchor <uri> -region <r> (region r's tenant rekey), -op set-regions " +
			"-regions <r1,r2> [-home <r>] (at governance, a shared tenant's new region set when it adds a region, or making a tenant shared " +
			"with home r). The consent is bound to a request id (a fresh one " +
			"unless -request-id), valid for -ttl (at most 24h) and usable once; the operator gives it with -consent <file>.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&key, "key", "", "the owner private key (required)")
			fs.StringVar(&op, "op", "", "set-anchor, set-owner, rekey or set-regions (required)")
			fs.StringVar(&anchorURI, "anchor", "", "set-anchor, rekey: the new anchor URI")
			fs.StringVar(&region, "region", "", "rekey: the region (required); set-anchor: the region, for one region's own anchor; set-owner: the region, for a region's tenant set-owner")
			fs.StringVar(&ownerPub, "owner-pub", "", "set-owner: the new owner public key file")
			fs.StringVar(&regions, "regions", "", "set-regions: the tenant's new regions, comma-separated, exactly as 'tenant set-regions -regions' gives them")
			fs.StringVar(&home, "home", "", "set-regions: the home region, when making a tenant shared (as 'tenant set-regions -home')")
			fs.StringVar(&requestID, "request-id", "", "the request id the change must use (default: a fresh one)")
			fs.DurationVar(&ttl, "ttl", owner.DefaultTTL, "how long the consent is valid (at most 24h)")
			fs.StringVar(&out, "out", "", "where to write the consent (required)")
		},
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			usage := "-key <owner.key> -op <op> ... -out <consent.jws> <tenant>"
			if err := nargs(fs, 1, 1, usage); err != nil {
				return err
			}
			if key == "" || out == "" {
				return usagef("%s: -key and -out are required", cmdName(fs))
			}
			if ttl <= 0 || ttl > owner.MaxTTL {
				return usagef("%s: -ttl must be positive and at most %s", cmdName(fs), owner.MaxTTL)
			}
			st := owner.Statement{Tenant: fs.Arg(0), Op: op, RequestID: requestID}
			switch op {
			case owner.OpSetAnchor, owner.OpRekey:
				if anchorURI == "" {
					return usagef("%s: -op %s needs -anchor", cmdName(fs), op)
				}
				st.Anchor = anchorURI
				if op == owner.OpRekey && region == "" {
					return usagef("%s: -op rekey needs -region", cmdName(fs))
				}
				st.Region = region
			case owner.OpSetOwner:
				if ownerPub == "" {
					return usagef("%s: -op set-owner needs -owner-pub", cmdName(fs))
				}
				b, err := os.ReadFile(ownerPub)
				if err != nil {
					return err
				}
				k, err := owner.ParsePublicKey(string(b))
				if err != nil {
					return fmt.Errorf("%s: %v", ownerPub, err)
				}
				st.OwnerKey, st.Region = k.Fingerprint(), region
			case owner.OpSetRegions:
				set := splitList(regions)
				if len(set) == 0 {
					return usagef("%s: -op set-regions needs -regions", cmdName(fs))
				}
				// Governance compares the set sorted and without repeats, as it stores it.
				slices.Sort(set)
				st.Regions, st.Region = strings.Join(slices.Compact(set), ","), home
			default:
				return usagef("%s: -op must be set-anchor, set-owner, rekey or set-regions", cmdName(fs))
			}
			if st.RequestID == "" {
				st.RequestID = newRequestID()
			} else if err := checkRequestID(st.RequestID); err != nil {
				return err
			}
			b, err := os.ReadFile(key)
			if err != nil {
				return err
			}
			signer, err := owner.ParsePrivateKey(b)
			if err != nil {
				return fmt.Errorf("%s: %v", key, err)
			}
			now := time.Now()
			st.Issued, st.Expires = now.Unix(), now.Add(ttl).Unix()
			c, err := signer.Sign(st)
			if err != nil {
				return err
			}
			// A consent is no secret (it allows one change, once, for a short time): overwrite.
			if err := os.WriteFile(out, []byte(c+"\n"), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(s.out, "Consent to %s for tenant %s, request id %s, valid until %s: %s\n", op, st.Tenant, st.RequestID, time.Unix(st.Expires, 0).UTC().Format(time.RFC3339), out)
			return nil
		},
	}
}

// consentFlag reads a consent file given with -consent, and makes the command's request id the one
// the consent names (unless -request-id was given, which must then match).
func consentFlag(fs *flag.FlagSet, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	c := strings.TrimSpace(string(b))
	rid, err := owner.RequestIDOf(c)
	if err != nil {
		return "", fmt.Errorf("%s: %v (krypton owner consent makes one)", path, err)
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "request-id" })
	if !given {
		if err := fs.Set("request-id", rid); err != nil {
			return "", err
		}
	} else if fs.Lookup("request-id").Value.String() != rid {
		return "", usagef("%s: -request-id differs from the one the consent names (%s); leave -request-id out", cmdName(fs), rid)
	}
	return c, nil
}
