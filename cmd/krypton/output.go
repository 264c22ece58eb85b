package main

import (
	"encoding/json"
	"flag"
	"io"
)

// formatFlag declares -format, the switch between output for people (text) and for programs (json).
func formatFlag(fs *flag.FlagSet) *string {
	return fs.String("format", "text", "output format: text or json")
}

// emit writes v as indented JSON when format is json, and calls text otherwise.
func emit(w io.Writer, format string, v any, text func(io.Writer) error) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "text", "":
		return text(w)
	default:
		return usagef("unknown -format %q (want text or json)", format)
	}
}
