package ttlv

// Enumeration values used by Krypton's KMIP server (KMIP 1.4 section 9.1.3.2
// and KMIP 2.0 section 11). They are untyped uint32 constants, the
// Enumeration's wire value, grouped by the enumeration they belong to.

// Operation.
const (
	OpCreate           uint32 = 0x01
	OpCreateKeyPair    uint32 = 0x02
	OpRegister         uint32 = 0x03
	OpRekey            uint32 = 0x04
	OpLocate           uint32 = 0x08
	OpCheck            uint32 = 0x09
	OpGet              uint32 = 0x0A
	OpGetAttributes    uint32 = 0x0B
	OpGetAttributeList uint32 = 0x0C
	OpAddAttribute     uint32 = 0x0D
	OpModifyAttribute  uint32 = 0x0E
	OpDeleteAttribute  uint32 = 0x0F
	OpActivate         uint32 = 0x12
	OpRevoke           uint32 = 0x13
	OpDestroy          uint32 = 0x14
	OpQuery            uint32 = 0x18
	OpDiscoverVersions uint32 = 0x1E
	OpEncrypt          uint32 = 0x1F
	OpDecrypt          uint32 = 0x20
)

// Result Status.
const (
	StatusSuccess         uint32 = 0
	StatusOperationFailed uint32 = 1
	StatusOperationUndone uint32 = 3
)

// Result Reason (KMIP 1.4; values up to 0x18 and General Failure are the
// same in 2.0).
const (
	ReasonItemNotFound          uint32 = 0x01
	ReasonResponseTooLarge      uint32 = 0x02
	ReasonInvalidMessage        uint32 = 0x04
	ReasonOperationNotSupported uint32 = 0x05
	ReasonMissingData           uint32 = 0x06
	ReasonInvalidField          uint32 = 0x07
	ReasonFeatureNotSupported   uint32 = 0x08
	ReasonCryptographicFailure  uint32 = 0x0A
	ReasonIllegalOperation      uint32 = 0x0B
	ReasonPermissionDenied      uint32 = 0x0C
	ReasonIndexOutOfBounds      uint32 = 0x0E
	ReasonKeyFormatNotSupported uint32 = 0x10
	ReasonKeyValueNotPresent    uint32 = 0x13
	ReasonGeneralFailure        uint32 = 0x100
	// KMIP 2.0 only.
	ReasonUnsupportedAttribute               uint32 = 0x1F
	ReasonAttributeInstanceNotFound          uint32 = 0x20
	ReasonAttributeNotFound                  uint32 = 0x21
	ReasonAttributeReadOnly                  uint32 = 0x22
	ReasonAttributeSingleValued              uint32 = 0x23
	ReasonIncompatibleCryptographicUsageMask uint32 = 0x29
	ReasonInvalidAttributeValue              uint32 = 0x2D
	ReasonNonUniqueNameAttribute             uint32 = 0x35
	ReasonWrongKeyLifecycleState             uint32 = 0x43
)

// Object Type.
const (
	ObjectSymmetricKey uint32 = 0x02
)

// State.
const (
	StatePreActive            uint32 = 1
	StateActive               uint32 = 2
	StateDeactivated          uint32 = 3
	StateCompromised          uint32 = 4
	StateDestroyed            uint32 = 5
	StateDestroyedCompromised uint32 = 6
)

// Cryptographic Algorithm.
const (
	AlgorithmAES uint32 = 0x03
)

// Block Cipher Mode.
const (
	ModeCBC uint32 = 0x01
	ModeGCM uint32 = 0x09
)

// Padding Method.
const (
	PaddingNone  uint32 = 0x01
	PaddingPKCS5 uint32 = 0x03
)

// Key Format Type.
const (
	KeyFormatRaw                     uint32 = 0x01
	KeyFormatTransparentSymmetricKey uint32 = 0x07
)

// Revocation Reason Code.
const (
	RevocationUnspecified   uint32 = 0x01
	RevocationKeyCompromise uint32 = 0x02
	RevocationCACompromise  uint32 = 0x03
)

// Link Type (KMIP 1.4 section 9.1.3.2.20).
const (
	LinkReplacementObject uint32 = 0x00000106
	LinkReplacedObject    uint32 = 0x00000107
)

// Name Type.
const (
	NameUninterpretedText uint32 = 0x01
)

// Batch Error Continuation Option.
const (
	BatchContinue uint32 = 0x01
	BatchStop     uint32 = 0x02
	BatchUndo     uint32 = 0x03
)

// Query Function.
const (
	QueryOperations uint32 = 0x01
	QueryObjects    uint32 = 0x02
	QueryServerInfo uint32 = 0x03
)

// Cryptographic Usage Mask bits.
const (
	UsageEncrypt uint32 = 0x04
	UsageDecrypt uint32 = 0x08
)
