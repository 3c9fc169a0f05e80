package rules

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// numberPrefix is the number syntax of the grammar: plain decimals with an
// optional exponent. It deliberately excludes what strconv.ParseFloat also
// takes (inf, nan, hex floats, underscores), none of which a rate needs.
var numberPrefix = regexp.MustCompile(`^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?`)

// splitNumber separates a leading number from the unit after it. Overflow
// comes back as ±Inf, for the caller's range check to report.
func splitNumber(s string) (num float64, unit string, ok bool) {
	m := numberPrefix.FindString(s)
	if m == "" {
		return 0, "", false
	}
	f, err := strconv.ParseFloat(m, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, "", false
	}
	return f, s[len(m):], true
}

// parseNumber reads a word that must be a number and nothing else.
func parseNumber(s string) (float64, bool) {
	f, unit, ok := splitNumber(s)
	return f, ok && unit == ""
}

// Rate limits accepted by the grammar, in bits per second.
const (
	MinRateBitsPerSec = 8_000           // 8 kbit/s: one MTU-sized packet a second or so
	MaxRateBitsPerSec = 100_000_000_000 // 100 Gbit/s: beyond any veth we shape
)

// rateUnits are all bits per second and decimal. "mbps" is megaBITS here,
// as in tc and the ELTE prototype's annotations; case-insensitivity leaves no room for MBps.
var rateUnits = map[string]float64{
	"bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9,
	"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
}

const rateUnitList = "bps, kbps, mbps, gbps, bit, kbit, mbit or gbit (bits per second, k=1000)"

var errRateRange = errors.New("want 8kbit to 100gbit per second")

func parseRate(w string) (uint64, error) {
	num, unit, ok := splitNumber(w)
	if !ok {
		return 0, fmt.Errorf("rate %s is not a number with a unit, e.g. 10mbps or 1.5gbit", q(w))
	}
	if unit == "" {
		return 0, fmt.Errorf("rate %s has no unit: add %s", q(w), rateUnitList)
	}
	mult, ok := rateUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("rate %s has unknown unit %s: want %s", q(w), q(unit), rateUnitList)
	}
	bits := num * mult
	// Written as a negated range so that NaN fails too.
	if !(bits >= MinRateBitsPerSec && bits <= MaxRateBitsPerSec) {
		return 0, fmt.Errorf("rate %s is out of range: %w", q(w), errRateRange)
	}
	return uint64(math.Round(bits)), nil
}

// formatRate renders bits/s exactly, in the largest unit that divides it,
// so that the text parses back to the same number.
func formatRate(bits uint64) string {
	for _, u := range []struct {
		div  uint64
		name string
	}{{1e9, "gbit"}, {1e6, "mbit"}, {1e3, "kbit"}} {
		if bits >= u.div && bits%u.div == 0 {
			return fmt.Sprintf("%d%s", bits/u.div, u.name)
		}
	}
	return fmt.Sprintf("%dbit", bits)
}

// FormatMeasured renders a measured rate in bits per second (not exact,
// unlike a rule's) with the grammar's units and three significant digits:
// "51.8mbit", "1.2gbit", "950bit".
func FormatMeasured(bits float64) string {
	// A unit is chosen after rounding to three digits, so that 999.6 kbit
	// reads "1mbit", not "1e+03kbit".
	for _, u := range []struct {
		div  float64
		name string
	}{{1e9, "gbit"}, {1e6, "mbit"}, {1e3, "kbit"}} {
		if bits >= u.div*0.9995 {
			return fmt.Sprintf("%.3g%s", bits/u.div, u.name)
		}
	}
	return fmt.Sprintf("%.0fbit", bits)
}

// Burst limits accepted by the grammar, in bytes. 0 means automatic.
const (
	MinBurstBytes = 1500    // one Ethernet MTU: a smaller bucket never passes a full packet
	MaxBurstBytes = 1 << 30 // 1 GiB
)

// sizeUnits: decimal k/m/g as the brief of the grammar says (kb=1000, unlike
// tc where kb=1024), binary with the explicit "i"; a bare number is bytes.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
}

const sizeUnitList = "b, kb, mb, gb (k=1000) or kib, mib, gib (k=1024)"

func parseBurst(w string) (uint64, error) {
	if strings.EqualFold(w, "auto") {
		return 0, nil
	}
	num, unit, ok := splitNumber(w)
	if !ok {
		return 0, fmt.Errorf("burst %s is not a size: want auto, or bytes with an optional unit %s", q(w), sizeUnitList)
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("burst %s has unknown unit %s: want %s", q(w), q(unit), sizeUnitList)
	}
	b := num * mult
	if b == 0 {
		return 0, nil
	}
	if !(b >= MinBurstBytes && b <= MaxBurstBytes) {
		return 0, fmt.Errorf("burst %s is out of range: want 0 or auto (derived from the rate), or 1500 bytes to 1gib", q(w))
	}
	return uint64(math.Round(b)), nil
}

// formatSize renders bytes exactly in the largest unit that divides them.
func formatSize(b uint64) string {
	for _, u := range []struct {
		div  uint64
		name string
	}{{1 << 30, "gib"}, {1e9, "gb"}, {1 << 20, "mib"}, {1e6, "mb"}, {1 << 10, "kib"}, {1e3, "kb"}} {
		if b >= u.div && b%u.div == 0 {
			return fmt.Sprintf("%d%s", b/u.div, u.name)
		}
	}
	return fmt.Sprintf("%db", b)
}
