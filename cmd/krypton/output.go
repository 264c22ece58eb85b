package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/proto"
)

// Every command prints through emit, the one output helper, in the format -format names:
//
//   - text (the default): for people, except where a command's help promises a single value that
//     scripts capture (wrap and datakey print the blob, unwrap -show-plaintext the data key as
//     base64), and then that value alone on one line;
//   - json: for programs, snake_case field names as the .proto files spell them;
//   - raw: the bytes themselves (a blob, a data key), for the commands that have such a value.
//
// Notes for people that would spoil a value on stdout go to stderr.

// Output formats.
const (
	formatText = "text"
	formatJSON = "json"
	formatRaw  = "raw"
)

// formatHelp is the -format flag's help; raw only for the commands that print bytes.
func formatHelp(raw bool) string {
	if raw {
		return "output format: text, json or raw (the bytes themselves)"
	}
	return "output format: text or json"
}

// checkFormat refuses a -format the command cannot print.
func checkFormat(format string, raw bool) error {
	switch format {
	case formatText, formatJSON:
		return nil
	case formatRaw:
		if raw {
			return nil
		}
	}
	if raw {
		return usagef("unknown -format %q (want text, json or raw)", format)
	}
	return usagef("unknown -format %q (want text or json)", format)
}

// emit writes v in format: as indented JSON for json (protojson for a proto message), with raw
// for raw, and with text otherwise. raw is nil for commands without a raw form.
func emit(w io.Writer, format string, v any, text, raw func(io.Writer) error) error {
	switch format {
	case formatJSON:
		if m, ok := v.(proto.Message); ok {
			return writeProtoJSON(w, m)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return writeIndented(w, b)
	case formatRaw:
		if raw == nil {
			return checkFormat(format, false)
		}
		if isTerminal(w) {
			return usagef("-format raw writes bytes, not text: redirect stdout to a file or a pipe")
		}
		return raw(w)
	case formatText, "":
		return text(w)
	default:
		return checkFormat(format, raw != nil)
	}
}

// isTerminal says whether w is a terminal (through the EPIPE watch of main.go too).
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// line writes s and a newline.
func line(w io.Writer, s string) error {
	_, err := fmt.Fprintln(w, s)
	return err
}
