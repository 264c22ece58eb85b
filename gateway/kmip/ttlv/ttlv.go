package ttlv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// Type is a TTLV item type.
type Type byte

// Item types (KMIP 1.4 section 9.1.1.2, and Date-Time Extended from 2.0).
const (
	TypeStructure        Type = 0x01
	TypeInteger          Type = 0x02 // 32-bit signed
	TypeLongInteger      Type = 0x03 // 64-bit signed
	TypeBigInteger       Type = 0x04 // two's complement, big-endian, length a multiple of 8
	TypeEnumeration      Type = 0x05 // 32-bit unsigned
	TypeBoolean          Type = 0x06 // 64-bit, 0 or 1
	TypeTextString       Type = 0x07 // UTF-8
	TypeByteString       Type = 0x08
	TypeDateTime         Type = 0x09 // 64-bit signed POSIX seconds
	TypeInterval         Type = 0x0A // 32-bit unsigned seconds
	TypeDateTimeExtended Type = 0x0B // 64-bit signed POSIX microseconds (KMIP 2.0)
)

func (t Type) String() string {
	switch t {
	case TypeStructure:
		return "Structure"
	case TypeInteger:
		return "Integer"
	case TypeLongInteger:
		return "LongInteger"
	case TypeBigInteger:
		return "BigInteger"
	case TypeEnumeration:
		return "Enumeration"
	case TypeBoolean:
		return "Boolean"
	case TypeTextString:
		return "TextString"
	case TypeByteString:
		return "ByteString"
	case TypeDateTime:
		return "DateTime"
	case TypeInterval:
		return "Interval"
	case TypeDateTimeExtended:
		return "DateTimeExtended"
	}
	return fmt.Sprintf("Type(0x%02x)", byte(t))
}

// Tag is a 3-byte KMIP tag. Standard tags are 0x42XXXX; 0x54XXXX are
// extensions (KMIP 1.4 section 9.1.3.1).
type Tag uint32

func (t Tag) String() string { return fmt.Sprintf("0x%06X", uint32(t)) }

// valid reports whether t is in one of KMIP's two tag ranges.
func (t Tag) valid() bool { return t>>16 == 0x42 || t>>16 == 0x54 }

// HeaderSize is the size of an item's tag, type and length.
const HeaderSize = 8

// Item is one TTLV item. Which value field is meaningful depends on Type:
// Int for Integer, LongInteger, Enumeration, Interval, Boolean (0 or 1),
// DateTime (seconds) and DateTimeExtended (microseconds); Bytes for
// TextString, ByteString and BigInteger; Children for Structure.
type Item struct {
	Tag      Tag
	Type     Type
	Int      int64
	Bytes    []byte
	Children []Item
}

// Struct returns a Structure of children.
func Struct(tag Tag, children ...Item) Item {
	return Item{Tag: tag, Type: TypeStructure, Children: children}
}

// Int returns an Integer.
func Int(tag Tag, v int32) Item { return Item{Tag: tag, Type: TypeInteger, Int: int64(v)} }

// Long returns a Long Integer.
func Long(tag Tag, v int64) Item { return Item{Tag: tag, Type: TypeLongInteger, Int: v} }

// Enum returns an Enumeration.
func Enum(tag Tag, v uint32) Item { return Item{Tag: tag, Type: TypeEnumeration, Int: int64(v)} }

// Bool returns a Boolean.
func Bool(tag Tag, v bool) Item {
	it := Item{Tag: tag, Type: TypeBoolean}
	if v {
		it.Int = 1
	}
	return it
}

// Text returns a Text String.
func Text(tag Tag, s string) Item { return Item{Tag: tag, Type: TypeTextString, Bytes: []byte(s)} }

// Bytes returns a Byte String holding b (not copied).
func Bytes(tag Tag, b []byte) Item { return Item{Tag: tag, Type: TypeByteString, Bytes: b} }

// DateTime returns a Date-Time of t, truncated to the second.
func DateTime(tag Tag, t time.Time) Item {
	return Item{Tag: tag, Type: TypeDateTime, Int: t.Unix()}
}

// Interval returns an Interval of whole seconds.
func Interval(tag Tag, seconds uint32) Item {
	return Item{Tag: tag, Type: TypeInterval, Int: int64(seconds)}
}

// Child returns the first child of it with tag, or nil.
func (it Item) Child(tag Tag) *Item {
	for i := range it.Children {
		if it.Children[i].Tag == tag {
			return &it.Children[i]
		}
	}
	return nil
}

// All returns the children of it with tag.
func (it Item) All(tag Tag) []*Item {
	var out []*Item
	for i := range it.Children {
		if it.Children[i].Tag == tag {
			out = append(out, &it.Children[i])
		}
	}
	return out
}

// Text returns the item's value as a string (TextString).
func (it Item) Text() string { return string(it.Bytes) }

// Time returns a DateTime's or DateTimeExtended's value.
func (it Item) Time() time.Time {
	if it.Type == TypeDateTimeExtended {
		return time.UnixMicro(it.Int).UTC()
	}
	return time.Unix(it.Int, 0).UTC()
}

// Errors returned by Decode and ReadMessage. Each is wrapped in a
// *DecodeError that says where decoding stopped.
var (
	// ErrMalformed is returned when bytes break a TTLV encoding rule.
	ErrMalformed = errors.New("ttlv: malformed")
	// ErrTooLarge is returned when a message exceeds Limits.MaxSize or
	// holds more than Limits.MaxItems items.
	ErrTooLarge = errors.New("ttlv: message too large")
	// ErrTooDeep is returned when structures nest deeper than
	// Limits.MaxDepth.
	ErrTooDeep = errors.New("ttlv: structures nested too deeply")
)

// DecodeError says which rule the input broke and where. It never holds
// the input's bytes.
type DecodeError struct {
	Offset int    // byte offset of the item header at fault
	Reason string // the rule broken
	Err    error  // ErrMalformed, ErrTooLarge or ErrTooDeep
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%v at offset %d: %s", e.Err, e.Offset, e.Reason)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Limits bound what Decode accepts.
type Limits struct {
	// MaxSize is the largest encoding accepted, in bytes, header included.
	MaxSize int
	// MaxDepth is the deepest nesting of structures; the outermost
	// structure is depth 1.
	MaxDepth int
	// MaxItems is the most items (of any type) in one encoding, which
	// bounds the memory a small message of many empty items can demand.
	MaxItems int
}

// DefaultLimits returns limits fit for a KMIP server: 1 MiB messages,
// structures 16 deep (a KMIP request nests about 7 deep), 16384 items.
func DefaultLimits() Limits {
	return Limits{MaxSize: 1 << 20, MaxDepth: 16, MaxItems: 1 << 14}
}

// Decode decodes exactly one item from b. Trailing bytes are an error. The
// returned item's byte slices are copies: b may be reused or wiped.
func Decode(b []byte, lim Limits) (Item, error) {
	if lim.MaxSize > 0 && len(b) > lim.MaxSize {
		return Item{}, &DecodeError{Offset: 0, Reason: "message exceeds the size limit", Err: ErrTooLarge}
	}
	d := decoder{buf: b, lim: lim}
	it, n, err := d.item(0, 1)
	if err != nil {
		return Item{}, err
	}
	if n != len(b) {
		return Item{}, &DecodeError{Offset: n, Reason: "trailing bytes after the item", Err: ErrMalformed}
	}
	return it, nil
}

type decoder struct {
	buf   []byte
	lim   Limits
	items int
}

func (d *decoder) fail(off int, err error, reason string) error {
	return &DecodeError{Offset: off, Reason: reason, Err: err}
}

// item decodes the item at off, at nesting depth (1 for the outermost), and
// returns it with the offset just past its padding.
func (d *decoder) item(off, depth int) (Item, int, error) {
	d.items++
	if d.lim.MaxItems > 0 && d.items > d.lim.MaxItems {
		return Item{}, 0, d.fail(off, ErrTooLarge, "too many items")
	}
	if len(d.buf)-off < HeaderSize {
		return Item{}, 0, d.fail(off, ErrMalformed, "truncated item header")
	}
	h := d.buf[off : off+HeaderSize]
	tag := Tag(uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2]))
	typ := Type(h[3])
	length := binary.BigEndian.Uint32(h[4:8])
	if !tag.valid() {
		return Item{}, 0, d.fail(off, ErrMalformed, "tag outside the KMIP ranges")
	}
	body := off + HeaderSize
	rest := uint64(len(d.buf) - body)
	padded := (uint64(length) + 7) &^ 7
	if padded > rest {
		return Item{}, 0, d.fail(off, ErrMalformed, "length runs past the end of the input")
	}
	end := body + int(length)
	next := body + int(padded)
	for _, p := range d.buf[end:next] {
		if p != 0 {
			return Item{}, 0, d.fail(off, ErrMalformed, "non-zero padding")
		}
	}
	v := d.buf[body:end]
	it := Item{Tag: tag, Type: typ}
	switch typ {
	case TypeStructure:
		if d.lim.MaxDepth > 0 && depth > d.lim.MaxDepth {
			return Item{}, 0, d.fail(off, ErrTooDeep, "structure nested too deeply")
		}
		if length%8 != 0 {
			return Item{}, 0, d.fail(off, ErrMalformed, "structure length not a multiple of 8")
		}
		p := body
		for p < end {
			c, n, err := d.item(p, depth+1)
			if err != nil {
				return Item{}, 0, err
			}
			if n > end {
				return Item{}, 0, d.fail(p, ErrMalformed, "child overruns its structure")
			}
			it.Children = append(it.Children, c)
			p = n
		}
	case TypeInteger, TypeEnumeration, TypeInterval:
		if length != 4 {
			return Item{}, 0, d.fail(off, ErrMalformed, typ.String()+" length not 4")
		}
		u := binary.BigEndian.Uint32(v)
		if typ == TypeInteger {
			it.Int = int64(int32(u))
		} else {
			it.Int = int64(u)
		}
	case TypeLongInteger, TypeDateTime, TypeDateTimeExtended:
		if length != 8 {
			return Item{}, 0, d.fail(off, ErrMalformed, typ.String()+" length not 8")
		}
		it.Int = int64(binary.BigEndian.Uint64(v))
	case TypeBoolean:
		if length != 8 {
			return Item{}, 0, d.fail(off, ErrMalformed, "Boolean length not 8")
		}
		u := binary.BigEndian.Uint64(v)
		if u > 1 {
			return Item{}, 0, d.fail(off, ErrMalformed, "Boolean neither 0 nor 1")
		}
		it.Int = int64(u)
	case TypeBigInteger:
		if length == 0 || length%8 != 0 {
			return Item{}, 0, d.fail(off, ErrMalformed, "BigInteger length not a positive multiple of 8")
		}
		it.Bytes = append([]byte(nil), v...)
	case TypeTextString:
		if !utf8.Valid(v) {
			return Item{}, 0, d.fail(off, ErrMalformed, "TextString not UTF-8")
		}
		it.Bytes = append([]byte{}, v...)
	case TypeByteString:
		it.Bytes = append([]byte{}, v...)
	default:
		return Item{}, 0, d.fail(off, ErrMalformed, "unknown item type")
	}
	return it, next, nil
}

// Size returns the length of it's encoding, padding included.
func Size(it Item) int {
	return HeaderSize + paddedLen(it)
}

// valueLen is the unpadded length of it's value.
func valueLen(it Item) int {
	switch it.Type {
	case TypeStructure:
		n := 0
		for _, c := range it.Children {
			n += Size(c)
		}
		return n
	case TypeInteger, TypeEnumeration, TypeInterval:
		return 4
	case TypeLongInteger, TypeDateTime, TypeDateTimeExtended, TypeBoolean:
		return 8
	default:
		return len(it.Bytes)
	}
}

func paddedLen(it Item) int { return (valueLen(it) + 7) &^ 7 }

// Append appends it's encoding to dst. It panics on a type it does not
// know or a BigInteger whose length is not a multiple of 8: both are
// programming errors, since only this program builds the items it encodes.
func Append(dst []byte, it Item) []byte {
	n := valueLen(it)
	dst = append(dst, byte(it.Tag>>16), byte(it.Tag>>8), byte(it.Tag), byte(it.Type))
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	switch it.Type {
	case TypeStructure:
		for _, c := range it.Children {
			dst = Append(dst, c)
		}
	case TypeInteger, TypeEnumeration, TypeInterval:
		dst = binary.BigEndian.AppendUint32(dst, uint32(it.Int))
	case TypeLongInteger, TypeDateTime, TypeDateTimeExtended, TypeBoolean:
		dst = binary.BigEndian.AppendUint64(dst, uint64(it.Int))
	case TypeTextString, TypeByteString:
		dst = append(dst, it.Bytes...)
	case TypeBigInteger:
		if n == 0 || n%8 != 0 {
			panic("ttlv: BigInteger length not a positive multiple of 8")
		}
		dst = append(dst, it.Bytes...)
	default:
		panic("ttlv: encode of unknown type " + it.Type.String())
	}
	for range ((n + 7) &^ 7) - n {
		dst = append(dst, 0)
	}
	return dst
}

// Marshal returns it's encoding.
func Marshal(it Item) []byte { return Append(make([]byte, 0, Size(it)), it) }

// ReadMessage reads one whole item from r: its header, then as many bytes
// as the header announces. It refuses, before reading the body, an item
// that is not a Structure, whose tag is outside KMIP's ranges, or whose
// length exceeds maxSize; the caller can then answer and close the
// connection, since it cannot find the next message.
func ReadMessage(r io.Reader, maxSize int) ([]byte, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	tag := Tag(uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2]))
	if !tag.valid() || Type(h[3]) != TypeStructure {
		return nil, &DecodeError{Offset: 0, Reason: "message is not a KMIP structure", Err: ErrMalformed}
	}
	length := binary.BigEndian.Uint32(h[4:])
	if uint64(length)+HeaderSize > uint64(maxSize) {
		return nil, &DecodeError{Offset: 0, Reason: "message exceeds the size limit", Err: ErrTooLarge}
	}
	if length%8 != 0 {
		return nil, &DecodeError{Offset: 0, Reason: "structure length not a multiple of 8", Err: ErrMalformed}
	}
	// The buffer grows with the bytes that actually arrive, doubling from
	// readChunk, never to more than the declared size: a peer that
	// declares a large length and sends little pins little, not the
	// declared size per connection.
	total := HeaderSize + int(length)
	buf := make([]byte, HeaderSize, min(total, HeaderSize+readChunk))
	copy(buf, h[:])
	for len(buf) < total {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(total, 2*cap(buf)))
			copy(grown, buf)
			clear(buf) // a request can carry key material
			buf = grown
		}
		n, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			clear(buf)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// readChunk is the first allocation of ReadMessage for a message body;
// most KMIP requests fit in it.
const readChunk = 4 << 10
