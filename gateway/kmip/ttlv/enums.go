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
	OpGet              uint32 = 0x0A
	OpGetAttributes    uint32 = 0x0B
	OpGetAttributeList uint32 = 0x0C
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
	ReasonItemNotFound           uint32 = 0x01
	ReasonResponseTooLarge       uint32 = 0x02
	ReasonInvalidMessage         uint32 = 0x04
	ReasonOperationNotSupported  uint32 = 0x05
	ReasonMissingData            uint32 = 0x06
	ReasonInvalidField           uint32 = 0x07
	ReasonFeatureNotSupported    uint32 = 0x08
	ReasonCryptographicFailure   uint32 = 0x0A
	ReasonIllegalOperation       uint32 = 0x0B
	ReasonPermissionDenied       uint32 = 0x0C
	ReasonKeyFormatNotSupported  uint32 = 0x10
	ReasonKeyValueNotPresent     uint32 = 0x13
	ReasonGeneralFailure         uint32 = 0x100
	ReasonWrongKeyLifecycleState uint32 = 0x43 // KMIP 2.0
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
