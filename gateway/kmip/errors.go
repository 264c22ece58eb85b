package kmip

import (
	"errors"
	"fmt"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

var (
	// ErrShutdown is returned by Serve and Close once Close has been
	// called.
	ErrShutdown = errors.New("kmip: server shut down")
	// ErrKeyRefused may be wrapped by a Keys implementation to say that the
	// region definitely refuses the key (revoked, locked, not authorised).
	ErrKeyRefused = errors.New("kmip: key refused")
	// errNotFound is returned by a registry when no object of the owner has
	// the identifier.
	errNotFound = errors.New("kmip: no such object")
)

// opError is a KMIP failure: a Result Reason and a Result Message for the
// client. The message is fixed text written here, never built from request
// bytes or key material.
type opError struct {
	reason uint32
	msg    string
	// payload, if not nil, is sent as the failed item's Response Payload:
	// Check answers a failure with the object and the parameters that
	// failed (KMIP 1.4 section 4.10), and PyKMIP reads them.
	payload []ttlv.Item
}

func (e *opError) Error() string { return fmt.Sprintf("kmip: %s (%s)", e.msg, reasonName(e.reason)) }

func fail(reason uint32, format string, args ...any) error {
	return &opError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

func invalidField(format string, args ...any) error {
	return fail(ttlv.ReasonInvalidField, format, args...)
}

// reasonName is the metric label and log value of a Result Reason.
func reasonName(r uint32) string {
	switch r {
	case ttlv.ReasonItemNotFound:
		return "item_not_found"
	case ttlv.ReasonResponseTooLarge:
		return "response_too_large"
	case ttlv.ReasonInvalidMessage:
		return "invalid_message"
	case ttlv.ReasonOperationNotSupported:
		return "operation_not_supported"
	case ttlv.ReasonMissingData:
		return "missing_data"
	case ttlv.ReasonInvalidField:
		return "invalid_field"
	case ttlv.ReasonFeatureNotSupported:
		return "feature_not_supported"
	case ttlv.ReasonCryptographicFailure:
		return "cryptographic_failure"
	case ttlv.ReasonIllegalOperation:
		return "illegal_operation"
	case ttlv.ReasonPermissionDenied:
		return "permission_denied"
	case ttlv.ReasonKeyFormatNotSupported:
		return "key_format_type_not_supported"
	case ttlv.ReasonKeyValueNotPresent:
		return "key_value_not_present"
	case ttlv.ReasonWrongKeyLifecycleState:
		return "wrong_key_lifecycle_state"
	case ttlv.ReasonIndexOutOfBounds:
		return "index_out_of_bounds"
	case ttlv.ReasonUnsupportedAttribute:
		return "unsupported_attribute"
	case ttlv.ReasonAttributeInstanceNotFound:
		return "attribute_instance_not_found"
	case ttlv.ReasonAttributeNotFound:
		return "attribute_not_found"
	case ttlv.ReasonAttributeReadOnly:
		return "attribute_read_only"
	case ttlv.ReasonAttributeSingleValued:
		return "attribute_single_valued"
	case ttlv.ReasonIncompatibleCryptographicUsageMask:
		return "incompatible_cryptographic_usage_mask"
	case ttlv.ReasonInvalidAttributeValue:
		return "invalid_attribute_value"
	case ttlv.ReasonNonUniqueNameAttribute:
		return "non_unique_name_attribute"
	case ttlv.ReasonGeneralFailure:
		return "general_failure"
	}
	return fmt.Sprintf("reason_%d", r)
}
