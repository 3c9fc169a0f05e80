package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// parseQuantityRate reads the standard annotations' value, a Kubernetes
// quantity of bits per second ("10M", "1G"), as the CNI bandwidth plugin
// does. ParseQuantity and Quantity.Cmp compute 10^exponent exactly, which
// for "1e-999999999" or "1e999999999" means minutes of big-number
// arithmetic; so the exponent is bounded before parsing and the range is
// checked on a float approximation rather than with Cmp (upstream:
// kubernetes/kubernetes#141306, still open at apimachinery v0.34.2).
func parseQuantityRate(value string) (uint64, error) {
	if err := checkValue(value); err != nil {
		return 0, err
	}
	s := strings.TrimFunc(value, isSpace)
	if err := checkQuantityExponent(s); err != nil {
		return 0, err
	}
	qty, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%s is not a quantity of bits per second: want e.g. 10M or 1G", q(s))
	}
	// Negated so that NaN (a mantissa too long for a float) fails too.
	if f := qty.AsApproximateFloat64(); !(f >= MinRateBitsPerSec && f <= MaxRateBitsPerSec) {
		return 0, fmt.Errorf("rate %s is out of range: want 8k to 100G bits per second", q(s))
	}
	// Value rounds a fractional quantity up to the next whole bit, which
	// may step over the limit ("100000000000.000001").
	v := qty.Value()
	if v > MaxRateBitsPerSec {
		return 0, fmt.Errorf("rate %s is out of range: want 8k to 100G bits per second", q(s))
	}
	return uint64(v), nil
}

// maxQuantityExponent bounds the decimal exponent ("1e9") handed to
// resource.ParseQuantity. A rate in range written with a larger exponent
// needs a mantissa of some 90 digits, which nobody writes.
const maxQuantityExponent = 99

// checkQuantityExponent rejects a decimal exponent beyond
// ±maxQuantityExponent before ParseQuantity sees it.
func checkQuantityExponent(s string) error {
	i := strings.LastIndexAny(s, "eE")
	if i < 0 || i+1 == len(s) {
		return nil
	}
	exp := s[i+1:]
	n, err := strconv.Atoi(exp)
	var numErr *strconv.NumError
	switch {
	case err == nil && n >= -maxQuantityExponent && n <= maxQuantityExponent:
		return nil
	case err != nil && !(errors.As(err, &numErr) && errors.Is(numErr.Err, strconv.ErrRange)):
		return nil // not an exponent (e.g. the "Ei" suffix): ParseQuantity decides
	}
	return fmt.Errorf("rate %s is out of range: exponent beyond ±%d; want 8k to 100G bits per second", q(s), maxQuantityExponent)
}
