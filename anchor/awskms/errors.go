package awskms

import (
	"context"
	"errors"
	"fmt"
	"net"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/kryptonkms/krypton/anchor"
)

// errorCodes maps the AWS KMS error codes of Encrypt and Decrypt (and the
// AWS-wide codes every API may return) to a denial reason, or to 0 for a
// transient failure. It follows the KMS API reference: the typed
// exceptions of service/kms/types, and the codes without a type
// (AccessDeniedException, ThrottlingException, ...) that the SDK returns
// as a *smithy.GenericAPIError.
var errorCodes = map[string]anchor.DenialReason{
	// Definite denials.
	"DisabledException":             anchor.ReasonDisabled,
	"KMSInvalidStateException":      anchor.ReasonPendingDeletion, // also PendingImport, Unavailable: see doc.go
	"NotFoundException":             anchor.ReasonKeyNotFound,
	"InvalidArnException":           anchor.ReasonKeyNotFound,
	"AccessDeniedException":         anchor.ReasonAccessDenied, // IAM/key policy; local-kms: disabled or deleted key on Decrypt
	"UnrecognizedClientException":   anchor.ReasonAccessDenied, // access key unknown (deleted)
	"InvalidClientTokenId":          anchor.ReasonAccessDenied,
	"InvalidGrantTokenException":    anchor.ReasonAccessDenied,
	"InvalidCiphertextException":    anchor.ReasonInvalidCiphertext,
	"IncorrectKeyException":         anchor.ReasonInvalidCiphertext, // sealed under another key
	"InvalidKeyUsageException":      anchor.ReasonKeyUnusable,
	"UnsupportedOperationException": anchor.ReasonKeyUnusable,

	// Transient: KMS says to retry, or the problem is ours or AWS's, not
	// the key's.
	"KeyUnavailableException":             0, // "the key was not available. You can retry the request." (HTTP 500)
	"DependencyTimeoutException":          0,
	"KMSInternalException":                0,
	"InternalFailure":                     0,
	"ServiceUnavailable":                  0,
	"ThrottlingException":                 0,
	"Throttling":                          0,
	"LimitExceededException":              0, // request quota; key quotas are not hit by Encrypt/Decrypt
	"RequestLimitExceeded":                0,
	"ExpiredTokenException":               0, // temporary credentials expired: the SDK refreshes them
	"InvalidSignatureException":           0, // clock skew; the SDK corrects it on the next call
	"IncompleteSignature":                 0,
	"RequestExpired":                      0,
	"CustomKeyStoreInvalidStateException": 0,
	"XksProxyUriUnreachableException":     0,
	"XksProxyInvalidResponseException":    0,
}

// classify maps an error of the KMS client to the anchor error contract.
// op is "seal" or "unseal". Codes in errorCodes decide first; then an
// HTTP status (5xx and 429 are transient); then the transport (connection
// errors, timeouts, a done context are transient). What is left is
// returned unclassified: a bug to fix here, not a guess.
func classify(ctx context.Context, op string, err error) error {
	wrapped := fmt.Errorf("awskms: %w", err)
	if ctx.Err() != nil {
		return anchor.Transient(op, anchor.SchemeAWSKMS, wrapped)
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code := apiErr.ErrorCode()
		if reason, ok := errorCodes[code]; ok {
			if reason == 0 {
				return anchor.Transient(op, anchor.SchemeAWSKMS, wrapped)
			}
			return anchor.Deny(op, anchor.SchemeAWSKMS, reason, wrapped)
		}
		if code == "ValidationException" && op == "unseal" {
			// A blob KMS can not even parse.
			return anchor.Deny(op, anchor.SchemeAWSKMS, anchor.ReasonInvalidCiphertext, wrapped)
		}
		if apiErr.ErrorFault() == smithy.FaultServer {
			return anchor.Transient(op, anchor.SchemeAWSKMS, wrapped)
		}
	}
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		if s := respErr.HTTPStatusCode(); s >= 500 || s == 429 {
			return anchor.Transient(op, anchor.SchemeAWSKMS, wrapped)
		}
	}
	var (
		sendErr  *smithyhttp.RequestSendError
		canceled *smithy.CanceledError
		netErr   net.Error
		deserErr *smithy.DeserializationError
	)
	switch {
	case errors.As(err, &sendErr), errors.As(err, &canceled), errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return anchor.Transient(op, anchor.SchemeAWSKMS, wrapped)
	case errors.As(err, &deserErr):
		// A response cut short or not from KMS (a proxy's error page).
		return anchor.Transient(op, anchor.SchemeAWSKMS, wrapped)
	}
	return wrapped
}

// Typed exceptions this package relies on, so that a rename in the SDK
// breaks the build rather than the classification.
var (
	_ smithy.APIError = (*types.DisabledException)(nil)
	_ smithy.APIError = (*types.KMSInvalidStateException)(nil)
	_ smithy.APIError = (*types.NotFoundException)(nil)
	_ smithy.APIError = (*types.InvalidCiphertextException)(nil)
	_ smithy.APIError = (*types.IncorrectKeyException)(nil)
	_ smithy.APIError = (*types.KeyUnavailableException)(nil)
	_ smithy.APIError = (*types.DependencyTimeoutException)(nil)
	_ smithy.APIError = (*types.KMSInternalException)(nil)
	_ smithy.APIError = (*types.LimitExceededException)(nil)
)
