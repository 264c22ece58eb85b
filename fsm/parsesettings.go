package fsm

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseSettings reads region settings written as comma-separated name=value
// ("lease-duration=2s,anchor-check-period=1s,dedupe-window=100"; durations as
// time.ParseDuration reads them) over DefaultSettings, and validates the
// result. Blank v means no settings: nil, nil. The errors name the setting
// and what a valid one looks like; callers add where the text came from.
func ParseSettings(v string) (*Settings, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	s := DefaultSettings()
	for _, kv := range strings.Split(v, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		name, val, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not name=value", kv)
		}
		var dst *time.Duration
		switch name {
		case "lease-duration":
			dst = &s.LeaseDuration
		case "anchor-check-period":
			dst = &s.AnchorCheckPeriod
		case "anchor-grace-period":
			dst = &s.AnchorGracePeriod
		case "dedupe-window":
			n, err := strconv.Atoi(val)
			if err != nil {
				return nil, fmt.Errorf("dedupe-window %q is not a number", val)
			}
			s.DedupeWindow = n
			continue
		default:
			return nil, fmt.Errorf("unknown setting %q (want lease-duration, anchor-check-period, anchor-grace-period or dedupe-window)", name)
		}
		d, err := time.ParseDuration(val)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		*dst = d
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}
