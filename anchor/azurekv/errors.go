package azurekv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/kryptonkms/krypton/anchor"
)

// An APIError is an error answer of Key Vault, reduced to what classifies
// it: the HTTP status and the error codes of its body
// ({"error":{"code":"Forbidden","innererror":{"code":"KeyDisabled"}}}).
// Its message leaves out the response body and request URL that
// *azcore.ResponseError prints; Unwrap returns that error for callers who
// need it.
type APIError struct {
	Op         string // the REST operation: "wrapkey", "unwrapkey", "get"
	StatusCode int
	Code       string // error.code, e.g. "Forbidden", "KeyNotFound"
	InnerCode  string // error.innererror.code, e.g. "KeyDisabled", "ForbiddenByRbac"
	Err        *azcore.ResponseError
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("azurekv: %s: HTTP %d", e.Op, e.StatusCode)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.InnerCode != "" {
		s += "/" + e.InnerCode
	}
	return s
}

func (e *APIError) Unwrap() error { return e.Err }

// newAPIError reads the codes of a Key Vault error body.
func newAPIError(op string, re *azcore.ResponseError) *APIError {
	e := &APIError{Op: op, StatusCode: re.StatusCode, Code: re.ErrorCode, Err: re}
	if re.RawResponse == nil {
		return e
	}
	body, err := runtime.Payload(re.RawResponse)
	if err != nil || len(body) == 0 {
		return e
	}
	var v struct {
		Error struct {
			Code       string `json:"code"`
			InnerError *struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil {
		if v.Error.Code != "" {
			e.Code = v.Error.Code
		}
		if v.Error.InnerError != nil {
			e.InnerCode = v.Error.InnerError.Code
		}
	}
	return e
}

// classify turns an error of the azkeys client into the anchor error
// contract. op is the anchor operation ("seal", "unseal", "check",
// "open"), rest the REST operation, notFound the reason to give a 404
// (ReasonKeyNotFound when opening, ReasonPendingDeletion once the key has
// been seen: Key Vault answers 404 KeyNotFound for a soft-deleted key and
// for a purged one alike, and telling them apart needs a permission on
// deleted keys that Krypton is not granted).
//
// The table follows Key Vault's documented answers
// (https://learn.microsoft.com/azure/key-vault/general/rest-error-codes):
//
//	400 BadParameter         unseal: invalid ciphertext (the blob does not unwrap)
//	                         otherwise: key unusable (key type or operation not allowed)
//	401 Unauthorized         access denied: the vault refuses Krypton's token
//	403 .../KeyDisabled      disabled
//	403 .../*Expired, *NotYetValid  key unusable (outside its exp/nbf)
//	403 other (ForbiddenByRbac, ForbiddenByPolicy, ForbiddenByFirewall, AccessDenied)
//	                         access denied
//	404 KeyNotFound          notFound
//	408, 429, 5xx            transient
//	other statuses           transient: the vault did not say no to the key
//
// Errors that are not Key Vault answers (DNS, TCP, TLS, a done context, a
// credential that cannot get a token) are transient: the key said nothing.
// A credential that keeps failing is Krypton's own identity broken, which
// the region's grace period turns into a lockout if nobody fixes it.
func classify(op, rest string, err error, notFound anchor.DenialReason) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return anchor.Transient(op, anchor.SchemeAzureKV, fmt.Errorf("azurekv: %s: %w", rest, err))
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return anchor.Transient(op, anchor.SchemeAzureKV, fmt.Errorf("azurekv: %s: %w", rest, err))
	}
	e := newAPIError(rest, re)
	deny := func(r anchor.DenialReason) error { return anchor.Deny(op, anchor.SchemeAzureKV, r, e) }
	inner := strings.ToLower(e.InnerCode)
	switch s := e.StatusCode; {
	case s == http.StatusBadRequest:
		if op == "unseal" {
			return deny(anchor.ReasonInvalidCiphertext)
		}
		return deny(anchor.ReasonKeyUnusable)
	case s == http.StatusUnauthorized:
		return deny(anchor.ReasonAccessDenied)
	case s == http.StatusForbidden:
		switch {
		case strings.Contains(inner, "disabled"):
			return deny(anchor.ReasonDisabled)
		case strings.Contains(inner, "expired"), strings.Contains(inner, "notyetvalid"):
			return deny(anchor.ReasonKeyUnusable)
		}
		return deny(anchor.ReasonAccessDenied)
	case s == http.StatusNotFound:
		return deny(notFound)
	}
	return anchor.Transient(op, anchor.SchemeAzureKV, e)
}
